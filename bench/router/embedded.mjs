// Bulwark's embedded router in its own process, as `bulwark deploy router` runs it.
// usage: node embedded.mjs PORT ADMIN_PORT TOKEN BLUE_URL GREEN_URL
// BULWARK_DIST=/path/to/dist imports another build (A/B of two router versions, see ab.mjs).
// BENCH_PROBE=1: on SIGUSR2 print one `probe {json}` line (event-loop delay percentiles, CPU time and
// requests since the previous probe) and reset, so a driver can read the router's side of each run.
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { pathToFileURL } from 'node:url';

const dist = process.env.BULWARK_DIST ?? new URL('../../dist/', import.meta.url).pathname;
const { startEmbeddedRouter } = await import(pathToFileURL(`${dist.replace(/\/$/, '')}/deploy/index.js`).href);

const [port, adminPort, token, blue, green] = process.argv.slice(2);
const router = await startEmbeddedRouter({ port: Number(port), admin: { port: Number(adminPort), token } });
await router.setBackends('blue', [{ id: 'blue', url: blue }]);
await router.setBackends('green', [{ id: 'green', url: green }]);
await router.setWeights({ blue: 100, green: 0 });
if (process.env.BENCH_PROBE) {
  const eld = monitorEventLoopDelay({ resolution: 1 });
  eld.enable();
  let cpu = process.cpuUsage();
  let at = performance.now();
  // The router's own view of the blue slot (request received -> answer ended), since the last probe.
  let since = Date.now();
  // Cumulative counter (cheap): a window over everything would block the loop in old builds.
  const requests = async () => router.slots.blue.metrics.totals.requests;
  let reqs = await requests();
  // Only set by a diagnostic build: split of the router-side time (queue, upstream, writing back).
  const diag = () => {
    const d = globalThis.__diag;
    const pct = (xs, p) => {
      const s = [...xs].sort((a, b) => a - b);
      return s.length ? Math.round(s[Math.floor((s.length - 1) * p)] * 1000) / 1000 : 0;
    };
    const out = {
      queueP99: pct(d.q, 0.99),
      queueMax: pct(d.q, 1),
      upstreamP99: pct(d.u, 0.99),
      upstreamMax: pct(d.u, 1),
      writeP99: pct(d.w, 0.99),
    };
    d.q = [];
    d.u = [];
    d.w = [];
    return out;
  };
  process.on('SIGUSR2', async () => {
    const c = process.cpuUsage(cpu);
    const now = performance.now();
    const r = await requests();
    const w = await router.window('blue', since + 1000);
    since = Date.now();
    const ms = (ns) => Math.round(ns / 1e3) / 1e3;
    console.log(
      `probe ${JSON.stringify({
        wallMs: Math.round(now - at),
        cpuMs: Math.round((c.user + c.system) / 1e3),
        userMs: Math.round(c.user / 1e3),
        requests: r - reqs,
        eldP50: ms(eld.percentile(50)),
        eldP99: ms(eld.percentile(99)),
        eldMax: ms(eld.max),
        routerP99: w.latencyMs.p99,
        routerMax: w.latencyMs.max,
        ...(globalThis.__diag ? diag() : {}),
      })}`,
    );
    // Let the loop turn once so the delay caused by this probe is not counted in the next run.
    await new Promise((r) => setTimeout(r, 5));
    eld.reset();
    cpu = process.cpuUsage();
    at = performance.now();
    reqs = r;
  });
}
console.log('listening router');
process.on('SIGTERM', () => router.close().then(() => process.exit(0)));
