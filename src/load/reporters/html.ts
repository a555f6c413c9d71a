import { readFileSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import type { Summary } from '../summary.js';

const esc = (s: unknown) =>
  String(s).replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]!);

/** uPlot's script and stylesheet, to inline into a self-contained report (the drill reuses them). */
export function uplotAssets(): { js: string; css: string } {
  const require = createRequire(import.meta.url);
  const dir = dirname(require.resolve('uplot/package.json'));
  return {
    js: readFileSync(join(dir, 'dist', 'uPlot.iife.min.js'), 'utf8'),
    css: readFileSync(join(dir, 'dist', 'uPlot.min.css'), 'utf8'),
  };
}

function tableHtml(id: string, header: string[], rows: Array<Array<string | number>>): string {
  return `<table id="${id}"><thead><tr>${header.map((h) => `<th>${esc(h)}</th>`).join('')}</tr></thead><tbody>${rows
    .map((r) => `<tr>${r.map((c) => `<td>${esc(c)}</td>`).join('')}</tr>`)
    .join('')}</tbody></table>`;
}

const f = (n: number) => (Number.isFinite(n) ? (Math.round(n * 100) / 100).toString() : '');

/** One row of the endpoints table (an endpoint, or the totals). */
function endpointRow(
  label: string,
  e: Pick<Summary['totals'], 'requests' | 'failures' | 'errorRate' | 'rps' | 'latencyMs'>,
) {
  const l = e.latencyMs;
  return [
    label,
    e.requests,
    e.failures,
    f(e.errorRate * 100),
    f(l.avg),
    f(l.p50),
    f(l.p95),
    f(l.p99),
    f(l.max),
    f(e.rps),
  ];
}

/** At most `max` points per chart: average neighbouring seconds of long runs (max keeps the max). */
function downsample(points: Summary['timeline'], max = 1500): Summary['timeline'] {
  if (points.length <= max) return points;
  const step = Math.ceil(points.length / max);
  const out: Summary['timeline'] = [];
  for (let i = 0; i < points.length; i += step) {
    const chunk = points.slice(i, i + step);
    const avg = (k: keyof (typeof chunk)[0]) => chunk.reduce((a, p) => a + (p[k] as number), 0) / chunk.length;
    out.push({
      t: chunk[chunk.length - 1]!.t,
      rps: avg('rps'),
      errors: avg('errors'),
      p50: avg('p50'),
      p95: avg('p95'),
      p99: Math.max(...chunk.map((p) => p.p99)),
      vus: avg('vus'),
    });
  }
  return out;
}

const ENDPOINT_COLORS = ['#1a73e8', '#ea4335', '#34a853', '#fbbc04', '#673ab7', '#00897b', '#f06292', '#795548'];

/**
 * p95 latency per second of the busiest endpoints, on one x axis (null where an endpoint had no
 * request that second), at most `max` points: long runs keep the worst p95 of neighbouring seconds.
 */
export function endpointLatencySeries(
  s: Pick<Summary, 'endpointTimeline' | 'endpoints'>,
  top = 8,
  max = 1500,
): { t: number[]; series: Array<{ label: string; p95: Array<number | null> }> } {
  const timeline = s.endpointTimeline ?? {};
  const busiest = Object.keys(timeline)
    .map((k) => ({ k, n: timeline[k]!.reduce((a, p) => a + p.rps, 0) }))
    .sort((a, b) => b.n - a.n)
    .slice(0, top)
    .map((e) => e.k);
  const seconds = [...new Set(busiest.flatMap((k) => timeline[k]!.map((p) => p.t)))].sort((a, b) => a - b);
  const step = Math.max(1, Math.ceil(seconds.length / max));
  const t: number[] = [];
  for (let i = 0; i < seconds.length; i += step) t.push(seconds[Math.min(seconds.length, i + step) - 1]!);
  const series = busiest.map((label) => {
    const at = new Map(timeline[label]!.map((p) => [p.t, p.p95]));
    const p95: Array<number | null> = [];
    for (let i = 0; i < seconds.length; i += step) {
      let worst: number | null = null;
      for (const sec of seconds.slice(i, i + step)) {
        const v = at.get(sec);
        if (v !== undefined && (worst === null || v > worst)) worst = v;
      }
      p95.push(worst);
    }
    return { label, p95 };
  });
  return { t, series };
}

/**
 * One self-contained HTML file: uPlot and the data are inlined, so the report opens from a mail
 * attachment or a CI artifact with no network. Tables are plain HTML (readable without scripts).
 */
export function renderHtml(s: Summary, title = 'Bulwark load test'): string {
  const { js, css } = uplotAssets();
  const tl = downsample(s.timeline);
  const data = {
    t: tl.map((p) => p.t),
    rps: tl.map((p) => p.rps),
    errors: tl.map((p) => p.errors),
    p50: tl.map((p) => p.p50),
    p95: tl.map((p) => p.p95),
    p99: tl.map((p) => p.p99),
    vus: tl.map((p) => p.vus),
  };
  const perEndpoint = endpointLatencySeries(s);
  const run = s.run;
  const runRows: Array<[string, string]> = run
    ? [
        ['started', run.startedAt],
        ['scenario file', run.scenarioFile ?? '(defined in code)'],
        ['host', run.host ?? '(absolute URLs)'],
        ['Bulwark version', run.bulwarkVersion],
        ['load machine', run.machine],
        ...(run.commandLine ? [['command line', run.commandLine] as [string, string]] : []),
      ]
    : [];
  const crossed = s.thresholds.filter((t) => !t.ok).length;
  const verdict =
    s.thresholds.length === 0 ? 'no thresholds' : crossed ? `${crossed} threshold(s) crossed` : 'all thresholds passed';
  const tot = s.totals;
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>${esc(title)}</title>
<style>${css}
body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#222;max-width:1200px}
h1{font-size:22px;margin:0 0 4px} h2{font-size:17px;margin:28px 0 8px}
.cards{display:flex;gap:12px;flex-wrap:wrap;margin:16px 0}.card{border:1px solid #ddd;border-radius:8px;padding:10px 14px;min-width:120px}
.card b{display:block;font-size:20px}.ok{color:#137333}.bad{color:#b3261e}
table{border-collapse:collapse;width:100%;margin:6px 0}th,td{padding:4px 8px;border-bottom:1px solid #eee;text-align:right}
th:first-child,td:first-child{text-align:left}th{background:#f6f6f6}
.charts{display:grid;grid-template-columns:repeat(auto-fit,minmax(520px,1fr));gap:16px}
</style></head><body>
<h1>${esc(title)}</h1>
<div id="verdict" class="${crossed ? 'bad' : 'ok'}">${esc(verdict)}${s.aborted ? ' (stopped early)' : ''}</div>
<div class="cards">
<div class="card">requests<b id="total-requests">${tot.requests}</b></div>
<div class="card">req/s<b>${f(tot.rps)}</b></div>
<div class="card">errors<b id="total-error-rate">${f(tot.errorRate * 100)}%</b></div>
<div class="card">p95<b>${f(tot.latencyMs.p95)} ms</b></div>
<div class="card">p99<b>${f(tot.latencyMs.p99)} ms</b></div>
<div class="card">duration<b>${f(s.durationSeconds)} s</b></div>
<div class="card">max VUs<b>${s.vusMax}</b></div>
</div>
<h2>Over time</h2>
<div class="charts"><div id="chart-rps"></div><div id="chart-latency"></div><div id="chart-errors"></div><div id="chart-vus"></div>${
    perEndpoint.series.length ? '<div id="chart-endpoints"></div>' : ''
  }</div>
<h2>Endpoints</h2>
${tableHtml(
  'endpoints',
  ['endpoint', 'requests', 'failures', 'error %', 'avg ms', 'p50 ms', 'p95 ms', 'p99 ms', 'max ms', 'req/s'],
  [...s.endpoints.map((e) => endpointRow(`${e.method} ${e.name}`, e)), endpointRow('TOTAL', tot)],
)}
${
  s.checks.length
    ? `<h2>Checks</h2>${tableHtml(
        'checks',
        ['check', 'passes', 'fails'],
        s.checks.map((c) => [c.name, c.passes, c.fails]),
      )}`
    : ''
}
${
  s.thresholds.length
    ? `<h2>Thresholds</h2>${tableHtml(
        'thresholds',
        ['result', 'metric', 'threshold', 'value'],
        s.thresholds.map((t) => [t.ok ? 'pass' : 'FAIL', t.metric, t.expression, f(t.value)]),
      )}`
    : ''
}
<h2>Errors</h2>
${
  s.errors.length
    ? tableHtml(
        'errors',
        ['kind', 'error', 'where', 'count'],
        s.errors.map((e) => [e.kind, e.error, e.where, e.count]),
      )
    : '<p id="errors">no errors</p>'
}
${runRows.length ? `<h2>Run</h2>${tableHtml('run', ['', ''], runRows)}` : ''}
<h2>Metrics</h2>
${tableHtml(
  'metrics',
  ['metric', 'values'],
  Object.entries(s.metrics).map(([k, v]) => [
    k,
    Object.entries(v)
      .filter(([kk]) => kk !== 'type')
      .map(([kk, vv]) => `${kk}=${typeof vv === 'number' ? f(vv) : vv}`)
      .join('  '),
  ]),
)}
<script>${js}</script>
<script>
const D = ${JSON.stringify(data)};
const E = ${JSON.stringify(perEndpoint)};
function chart(el, title, series, ys) {
  const width = Math.min(560, document.getElementById(el).parentElement.clientWidth || 560);
  new uPlot({ title, width, height: 240, scales: { x: { time: false } }, axes: [{ label: 'seconds' }, {}],
    series: [{ label: 's' }, ...series] }, [D.t, ...ys], document.getElementById(el));
}
chart('chart-rps', 'Requests per second', [{ label: 'req/s', stroke: '#1a73e8' }], [D.rps]);
chart('chart-latency', 'Latency (ms)', [{ label: 'p50', stroke: '#34a853' }, { label: 'p95', stroke: '#fbbc04' }, { label: 'p99', stroke: '#ea4335' }], [D.p50, D.p95, D.p99]);
chart('chart-errors', 'Failed requests per second', [{ label: 'errors', stroke: '#b3261e' }], [D.errors]);
chart('chart-vus', 'Virtual users', [{ label: 'VUs', stroke: '#673ab7' }], [D.vus]);
if (E.series.length) {
  const colors = ${JSON.stringify(ENDPOINT_COLORS)};
  const el = document.getElementById('chart-endpoints');
  const width = Math.min(560, el.parentElement.clientWidth || 560);
  new uPlot({ title: 'p95 latency per endpoint (ms)', width, height: 240, scales: { x: { time: false } },
    axes: [{ label: 'seconds' }, {}],
    series: [{ label: 's' }, ...E.series.map((x, i) => ({ label: x.label, stroke: colors[i % colors.length], spanGaps: false }))] },
    [E.t, ...E.series.map((x) => x.p95)], el);
}
document.body.dataset.rendered = 'true';
</script>
</body></html>
`;
}

export function writeHtmlReport(path: string, summary: Summary): void {
  writeFileSync(path, renderHtml(summary));
}
