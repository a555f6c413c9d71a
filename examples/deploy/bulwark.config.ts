/**
 * Blue-green and canary deploys of the demo shop on one machine: Bulwark's embedded router in front,
 * local processes as instances. From this folder:
 *
 *   bulwark deploy router shop &                 # the router (keep it running, e.g. under systemd)
 *   bulwark deploy shop --version v1             # first deploy: blue takes all traffic
 *   bulwark load smoke.ts --host http://127.0.0.1:8080 --users 10 --duration 5m &   # some traffic
 *   bulwark deploy shop --version v2             # blue-green switch, analysis, old slot kept warm
 *   bulwark deploy shop --version v3 --strategy canary
 *   bulwark deploy status shop; bulwark deploy history shop
 *   bulwark deploy rollback shop                 # emergency: previous version, no analysis
 *
 * The app command gets PORT, BULWARK_VERSION and BULWARK_SLOT; a real app would pick its release
 * folder from the version (e.g. `node releases/{version}/server.js`).
 */
import { defineConfig } from 'bulwark';

export default defineConfig({
  deploy: {
    // webhooks: [{ url: 'https://hooks.example.com/deploys' }],
    apps: {
      shop: {
        router: { type: 'embedded', port: 8080, adminPort: 8089 },
        provider: {
          type: 'process',
          command: 'bulwark demo-server --label {version}',
          instances: 2,
          readiness: { path: '/health', timeout: '30s' },
        },
        healthChecks: [{ path: '/health', bodyContains: 'ok' }, { path: '/api/critical' }],
        smoke: { scenario: 'smoke.ts', users: 2, duration: '5s' },
        analysis: {
          interval: '10s',
          minRequests: 100,
          maxErrorRate: 0.01,
          maxP99Ms: 500,
          vsStable: { maxErrorRateIncrease: 0.01, maxP99Ratio: 1.5, p99SlackMs: 50 },
        },
        blueGreen: { monitor: '2m', keepOldFor: '10m' },
        canary: {
          steps: [
            { weight: 5, pause: '1m' },
            { weight: 25, pause: '1m' },
            { weight: 50, pause: '1m' },
          ],
          keepOldFor: '10m',
        },
        abort: { newSlot: 'stop' },
      },
    },
  },
});
