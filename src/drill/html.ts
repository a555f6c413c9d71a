import { uplotAssets } from '../load/index.js';
import { formatProbe } from './hypothesis.js';
import type { DrillJournal } from './run.js';

const esc = (s: unknown) =>
  String(s).replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]!);

const ms = (v: number | null) => (v === null ? 'not measured' : v >= 1000 ? `${(v / 1000).toFixed(2)} s` : `${v} ms`);
const n = (v: number | null) => (v === null ? 'not measured' : String(v));

/**
 * The drill's report as one self-contained HTML file (uPlot and the data inlined, no network): the
 * verdict, the figures, every step with its hypothesis and probes, and charts over time of req/s,
 * failed requests and latency with a vertical mark where each fault was injected.
 */
export function drillHtml(j: DrillJournal): string {
  const { js, css } = uplotAssets();
  const tl = j.timeline;
  const data = {
    t: tl.map((p) => p.t),
    rps: tl.map((p) => p.rps),
    errors: tl.map((p) => p.errors),
    p50: tl.map((p) => p.p50),
    p95: tl.map((p) => p.p95),
    p99: tl.map((p) => p.p99),
    faults: j.faults.map((f) => ({
      t: f.t,
      label: `${j.steps.find((s) => s.step === f.step)?.index ?? ''} ${f.step}`,
    })),
  };
  const m = j.measured;
  const card = (id: string, label: string, value: string, ok?: boolean) =>
    `<div class="card" id="${id}">${esc(label)}<b class="${ok === undefined ? '' : ok ? 'ok' : 'bad'}">${esc(value)}</b></div>`;
  const stepProbe = (step: string, name: RegExp) =>
    j.steps.find((s) => s.step === step)?.probes.find((p) => name.test(p.name))?.met;
  const steps = j.steps
    .map(
      (s) => `<section class="step" id="step-${esc(s.step)}" data-status="${esc(s.status)}">
<h3><span class="${s.status === 'succeeded' ? 'ok' : 'bad'}">${s.status === 'succeeded' ? 'HELD' : 'DEVIATED'}</span> ${s.index}. ${esc(s.title)} <small>${s.duration.toFixed(1)} s, ${s.traffic.failures} failed of ${s.traffic.requests} requests</small></h3>
<p class="hypothesis">${esc(s.hypothesis)}</p>
<ul class="probes">${s.probes.map((p) => `<li class="${p.met ? 'ok' : 'bad'}">${esc(formatProbe(p))}</li>`).join('')}
<li class="${s.before.steady_state_met ? 'ok' : 'bad'}">steady state before: ${s.before.steady_state_met ? 'met' : 'not met'}</li>
<li class="${s.after.steady_state_met ? 'ok' : 'bad'}">steady state after: ${
        s.after.steady_state_met
          ? 'met'
          : `not met (${esc(
              s.after.probes
                .filter((p) => !p.met)
                .map(formatProbe)
                .join('; '),
            )})`
      }</li></ul>
${s.error ? `<p class="bad">could not finish: ${esc(s.error)}</p>` : ''}
<details><summary>what happened</summary><pre>${esc(s.log.join('\n'))}</pre>
<table>${Object.entries(s.measured)
        .map(([k, v]) => `<tr><th>${esc(k)}</th><td>${esc(v)}</td></tr>`)
        .join('')}</table></details>
</section>`,
    )
    .join('\n');
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Bulwark drill</title>
<style>${css}
body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#222;max-width:1200px}
h1{font-size:22px;margin:0 0 4px} h2{font-size:17px;margin:28px 0 8px} h3{font-size:15px;margin:18px 0 4px}
small{color:#666;font-weight:normal}.hypothesis{margin:2px 0;color:#444;font-style:italic}
.cards{display:flex;gap:12px;flex-wrap:wrap;margin:16px 0}.card{border:1px solid #ddd;border-radius:8px;padding:10px 14px;min-width:130px}
.card b{display:block;font-size:20px}.ok{color:#137333}.bad{color:#b3261e}
ul.probes{margin:4px 0;padding-left:20px} pre{background:#f6f6f6;padding:8px;overflow:auto}
table{border-collapse:collapse}th,td{padding:2px 8px;border-bottom:1px solid #eee;text-align:left}
.charts{display:grid;grid-template-columns:repeat(auto-fit,minmax(520px,1fr));gap:16px}
</style></head><body>
<h1>Bulwark drill</h1>
<div id="verdict" class="${j.verdict.ok ? 'ok' : 'bad'}">${j.verdict.ok ? 'every hypothesis held' : `DEVIATED: ${esc(j.verdict.failed.join(', ') || j.status)}`}</div>
<p>${esc(j.start)} — ${j.duration.toFixed(0)} s, ${esc(j.status)}; ${j.experiment.configuration.sync ? 'synchronous' : 'asynchronous'} replication, ${j.experiment.configuration.rate} req/s through the router${j.error ? `; <span class="bad">${esc(j.error)}</span>` : ''}</p>
<div class="cards">
${card('card-rto', 'write gap (RTO)', ms(m.rtoMs), stepProbe('failover', /RTO/))}
${card('card-rpo', 'acknowledged orders lost', n(m.lostAcknowledgedOrders), stepProbe('failover', /RPO/))}
${card('card-bad', 'failed requests, bad release', n(m.failedRequestsBadRelease))}
${card('card-good', 'failed requests, good release', n(m.failedRequestsGoodRelease), stepProbe('good-release', /failed/))}
${card('card-pitr', 'PITR: queryable copy', ms(m.pitrTimeToQueryableMs))}
${card('card-rows', 'PITR: orders recovered', n(m.pitrRowsRecovered), stepProbe('pitr', /missing/))}
${card('card-traffic', 'requests (failed)', `${m.requests} (${m.failedRequests})`)}
</div>
<h2>Over time</h2>
<p>Vertical lines: the moment each step acted (the backup, then each fault) (${data.faults.map((f) => esc(f.label)).join(', ') || 'none'}).</p>
<div class="charts"><div id="chart-rps"></div><div id="chart-errors"></div><div id="chart-latency"></div></div>
<h2>Steps</h2>
${steps}
<script>${js}</script>
<script>
const D = ${JSON.stringify(data).replace(/</g, '\\u003c')};
window.faultMarks = 0;
function marks(u) {
  const ctx = u.ctx;
  ctx.save();
  ctx.strokeStyle = '#b3261e'; ctx.fillStyle = '#b3261e'; ctx.setLineDash([4, 3]); ctx.font = '11px system-ui';
  for (const f of D.faults) {
    const x = u.valToPos(f.t, 'x', true);
    ctx.beginPath(); ctx.moveTo(x, u.bbox.top); ctx.lineTo(x, u.bbox.top + u.bbox.height); ctx.stroke();
    ctx.fillText(f.label, x + 3, u.bbox.top + 12);
    window.faultMarks++;
  }
  ctx.restore();
}
function chart(el, title, series, ys) {
  const width = Math.min(560, document.getElementById(el).parentElement.clientWidth || 560);
  new uPlot({ title, width, height: 240, scales: { x: { time: false } }, axes: [{ label: 'seconds' }, {}],
    series: [{ label: 's' }, ...series], hooks: { draw: [marks] } }, [D.t, ...ys], document.getElementById(el));
}
chart('chart-rps', 'Requests per second', [{ label: 'req/s', stroke: '#1a73e8' }], [D.rps]);
chart('chart-errors', 'Failed requests per second', [{ label: 'errors', stroke: '#b3261e' }], [D.errors]);
chart('chart-latency', 'Latency (ms)', [{ label: 'p50', stroke: '#34a853' }, { label: 'p95', stroke: '#fbbc04' }, { label: 'p99', stroke: '#ea4335' }], [D.p50, D.p95, D.p99]);
document.body.dataset.rendered = 'true';
</script>
</body></html>
`;
}
