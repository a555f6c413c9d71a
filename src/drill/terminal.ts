import { formatProbe } from './hypothesis.js';
import type { DrillJournal } from './run.js';
import type { DrillEvent } from './types.js';

/**
 * The live view: one line per thing that happened, indented under its step, and a traffic line
 * (req/s, errors, p99, orders) rewritten in place on a terminal, printed every 10 s otherwise.
 */
export function liveDrillView(out: NodeJS.WriteStream = process.stderr): (e: DrillEvent) => void {
  const tty = Boolean(out.isTTY);
  let status = '';
  let lastPrinted = -10;
  const write = (line: string) => {
    if (tty && status) out.write('\r\x1b[K');
    out.write(`${line}\n`);
    if (tty && status) out.write(status);
  };
  return (e) => {
    switch (e.type) {
      case 'setup':
        write(`  setup  ${e.line}`);
        break;
      case 'step-start':
        write(`\n[${e.index}/${e.total}] ${e.title}\n        hypothesis: ${e.hypothesis}`);
        break;
      case 'step-log':
        write(`        ${e.line}`);
        break;
      case 'step-end': {
        const r = e.result;
        for (const p of r.probes) write(`        ${formatProbe(p)}`);
        if (!r.before.steady_state_met) write('        [FAIL] steady state did not hold before the step');
        if (!r.after.steady_state_met)
          write(
            `        [FAIL] steady state did not return after the step: ${r.after.probes
              .filter((p) => !p.met)
              .map(formatProbe)
              .join('; ')}`,
          );
        write(
          `        ${r.status === 'succeeded' ? 'HELD' : 'DEVIATED'} in ${r.duration.toFixed(1)} s (${r.traffic.failures} failed of ${r.traffic.requests} requests)`,
        );
        break;
      }
      case 'traffic': {
        const line = `  load ${e.elapsedS.toFixed(0).padStart(4)} s  ${e.rps.toFixed(0).padStart(4)} req/s  ${String(e.errors).padStart(3)} errors  p99 ${e.p99.toFixed(1)} ms  +${e.orders} orders`;
        if (tty) {
          status = line;
          out.write(`\r\x1b[K${line}`);
        } else if (e.elapsedS - lastPrinted >= 10) {
          lastPrinted = e.elapsedS;
          out.write(`${line}\n`);
        }
        break;
      }
      case 'cleanup':
        if (tty && status) {
          out.write('\r\x1b[K');
          status = '';
        }
        write(`  cleanup  ${e.line}`);
        break;
    }
  };
}

/** The verdict block printed at the end (stdout). */
export function formatVerdict(j: DrillJournal): string {
  const lines = [
    '',
    `bulwark drill: ${j.verdict.ok ? 'every hypothesis held' : 'DEVIATED'} (${j.duration.toFixed(0)} s, ${j.status})`,
  ];
  for (const s of j.steps) {
    const key = Object.entries(s.measured)
      .filter(
        ([k, v]) =>
          (typeof v === 'number' && /Ms$|^lost|^missing|failed|rows/i.test(k)) ||
          (k === 'rpo' && typeof v === 'string'),
      )
      .map(([k, v]) => (typeof v === 'string' ? `${k} not measured` : `${k} ${v}`))
      .join(', ');
    lines.push(`  ${s.status === 'succeeded' ? 'ok  ' : 'FAIL'} ${s.index}. ${s.title}${key ? `: ${key}` : ''}`);
  }
  if (j.error) lines.push(`  the drill could not run to its end: ${j.error}`);
  const m = j.measured;
  lines.push(
    `  traffic: ${m.requests} requests, ${m.failedRequests} failed, ${m.ordersAcknowledged === null ? 'acknowledged writes not measured' : `${m.ordersAcknowledged} orders acknowledged`}`,
  );
  return lines.join('\n');
}
