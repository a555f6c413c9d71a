import { HaproxyRouter } from '../../src/deploy/index.js';
import { startHaproxy } from '../harness/haproxy.js';
import { routerConformance } from './router-conformance.js';

// Debian's HAProxy, driven through its runtime API socket.
routerConformance('haproxy (runtime API)', async () => {
  const hap = await startHaproxy({ perSlot: 2 });
  return {
    router: new HaproxyRouter({
      socket: hap.socket,
      backend: hap.backend,
      servers: hap.servers,
      frontendUrl: hap.frontendUrl,
    }),
    frontendUrl: hap.frontendUrl,
    maxPerSlot: 2,
    cleanup: () => hap.stop(),
  };
});
