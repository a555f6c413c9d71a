export { type NewOrder, ORDERS_TABLE_SQL, type OrderStore, type SqlQueryable, sqlOrderStore } from './orders.js';
export { type DemoServer, type DemoServerOptions, startDemoServer } from './server.js';
