export { type DemoServer, type DemoServerOptions, startDemoServer } from './server.js';
