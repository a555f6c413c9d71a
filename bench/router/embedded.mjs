// Bulwark's embedded router in its own process, as `bulwark deploy router` runs it.
// usage: node embedded.mjs PORT ADMIN_PORT TOKEN BLUE_URL GREEN_URL
import { startEmbeddedRouter } from '../../dist/deploy/index.js';

const [port, adminPort, token, blue, green] = process.argv.slice(2);
const router = await startEmbeddedRouter({ port: Number(port), admin: { port: Number(adminPort), token } });
await router.setBackends('blue', [{ id: 'blue', url: blue }]);
await router.setBackends('green', [{ id: 'green', url: green }]);
await router.setWeights({ blue: 100, green: 0 });
console.log('listening router');
process.on('SIGTERM', () => router.close().then(() => process.exit(0)));
