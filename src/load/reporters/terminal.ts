import { relative } from 'node:path';
import { formatDuration } from '../../config/duration.js';
import type { Plan, ScenarioPlan } from '../executors/plan.js';
import type { Progress } from '../runner.js';
import type { LatencyMs, Summary } from '../summary.js';

/** Render rows as an aligned text table (first column left-aligned, the rest right-aligned). */
export function table(header: string[], rows: Array<Array<string | number>>, leftColumns = 1): string {
  const cells = [header, ...rows.map((r) => r.map(String))];
  const widths = header.map((_, i) => Math.max(...cells.map((r) => (r[i] ?? '').length)));
  const line = (r: string[]) =>
    r.map((c, i) => (i < leftColumns ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join('  ');
  return [line(header), widths.map((w) => '─'.repeat(w)).join('  '), ...cells.slice(1).map(line)].join('\n');
}

const ms = (n: number) =>
  n >= 1000 ? `${(n / 1000).toFixed(2)}s` : n >= 10 ? `${n.toFixed(0)}ms` : `${n.toFixed(2)}ms`;
const pct = (n: number) => `${(n * 100).toFixed(2)}%`;

function latencyCells(l: LatencyMs): string[] {
  return [ms(l.avg), ms(l.p50), ms(l.p95), ms(l.p99), ms(l.max)];
}

/** The end-of-run report: endpoints, totals, checks, thresholds, errors. */
export function formatSummary(s: Summary): string {
  const out: string[] = [];
  out.push(
    `\nbulwark load: ${s.durationSeconds.toFixed(1)}s, ${s.iterations} iterations, up to ${s.vusMax} VUs${s.aborted ? ' (stopped early)' : ''}\n`,
  );
  out.push(
    table(
      ['endpoint', 'requests', 'fails', 'error %', 'avg', 'p50', 'p95', 'p99', 'max', 'req/s'],
      [
        ...s.endpoints.map((e) => [
          `${e.method} ${e.name}`,
          e.requests,
          e.failures,
          pct(e.errorRate),
          ...latencyCells(e.latencyMs),
          e.rps.toFixed(1),
        ]),
        [
          'TOTAL',
          s.totals.requests,
          s.totals.failures,
          pct(s.totals.errorRate),
          ...latencyCells(s.totals.latencyMs),
          s.totals.rps.toFixed(1),
        ],
      ],
    ),
  );
  if (s.checks.length) {
    out.push('\nchecks');
    out.push(
      table(
        ['check', 'passes', 'fails', 'pass %'],
        s.checks.map((c) => [c.name, c.passes, c.fails, pct(c.passes / Math.max(1, c.passes + c.fails))]),
      ),
    );
  }
  const custom = Object.entries(s.metrics).filter(([, m]) => m.type === 'trend');
  if (custom.length) {
    out.push('\ntrends');
    out.push(
      table(
        ['metric', 'count', 'avg', 'med', 'p95', 'p99', 'max'],
        custom.map(([name, m]) => [
          name,
          m.count!,
          ms(Number(m.avg)),
          ms(Number(m.med)),
          ms(Number(m.p95)),
          ms(Number(m.p99)),
          ms(Number(m.max)),
        ]),
      ),
    );
  }
  if (s.droppedIterations) out.push(`\ndropped iterations: ${s.droppedIterations} (all maxVUs were busy)`);
  for (const l of s.workerLosses ?? [])
    out.push(
      `\nworker lost: ${l.worker} at ${l.atSeconds.toFixed(1)}s (${l.error}); its metrics up to then are included`,
    );
  if (s.interruptedRequests)
    out.push(
      `\ninterrupted requests: ${s.interruptedRequests} (abandoned when their VU's grace period ran out; not timed)`,
    );
  if (s.thresholds.length) {
    out.push('\nthresholds');
    out.push(
      table(
        ['', 'metric', 'threshold', 'value'],
        s.thresholds.map((t) => [t.ok ? '✓' : '✗', t.metric, t.expression, Number(t.value.toFixed(4))]),
        3,
      ),
    );
  }
  if (s.errors.length) {
    out.push('\nerrors');
    out.push(
      table(
        ['error', 'where', 'count'],
        s.errors
          .slice(0, 30)
          .map((e) => [e.kind === 'exception' ? `exception: ${e.error}` : e.error, e.where, e.count]),
        2,
      ),
    );
  }
  const crossed = s.thresholds.filter((t) => !t.ok).length;
  out.push(crossed ? `\n✗ ${crossed} threshold(s) crossed` : s.thresholds.length ? '\n✓ all thresholds passed' : '');
  return out.join('\n');
}

function statusLine(p: Progress): string {
  const r = p.aggregate.recent(5);
  const remaining = Math.max(0, p.totalMs - p.elapsedMs);
  return `${formatDuration(p.elapsedMs)} elapsed, ${formatDuration(remaining)} left | VUs ${p.aggregate.currentVus()} | ${r.rps.toFixed(0)} req/s | p95 ${ms(r.p95)} | errors ${pct(r.errorRate)}`;
}

/** "constant-vus, up to 3 VUs, 10m" */
export function describePlan(plan: Plan): string {
  const peak = Math.max(plan.start, ...plan.stages.map((s) => s.target));
  let what: string;
  if (plan.kind === 'closed') what = `up to ${Math.ceil(peak)} VUs`;
  else if (plan.kind === 'open') what = `up to ${Number(peak.toFixed(2))} iterations/s, max ${plan.maxVUs} VUs`;
  else if (plan.kind === 'iterations')
    what = `${plan.iterations} iterations${plan.executor === 'per-vu-iterations' ? ' per VU' : ''}, ${plan.vus} VUs`;
  else what = 'users from the shape function';
  const length = plan.kind === 'iterations' || plan.kind === 'shape' ? 'at most ' : '';
  return `${plan.executor}, ${what}, ${length}${formatDuration(plan.totalMs)}`;
}

/**
 * Live progress on stderr: on a TTY one line redrawn every second; otherwise (CI logs) one plain line
 * every 5 s, so logs stay readable.
 */
export function liveView(stream: NodeJS.WriteStream = process.stderr): {
  onStart(info: { plan: Plan; plans?: ScenarioPlan[]; workers: number; file?: string; typecheck?: string }): void;
  onProgress(p: Progress): void;
  end(): void;
} {
  const tty = Boolean(stream.isTTY);
  let lastPlain = 0;
  return {
    onStart({ plan, plans, workers, file, typecheck }) {
      const where = workers > 1 ? ` on ${workers} workers` : '';
      const cached = typecheck === 'cached' ? ' (type-check cached: unchanged since it passed)' : '';
      const named = plans && (plans.length > 1 || plans[0]?.name !== 'default');
      const what = named
        ? plans
            .map(
              (sp) =>
                `${sp.name} (${describePlan(sp.plan)}${sp.startMs ? `, from ${formatDuration(sp.startMs)}` : ''})`,
            )
            .join('; ')
        : describePlan(plan);
      stream.write(`running ${file ? relative(process.cwd(), file) || file : 'scenario'}: ${what}${where}${cached}\n`);
    },
    onProgress(p) {
      if (tty) {
        stream.write(`\r\x1b[2K${statusLine(p)}`);
      } else if (p.elapsedMs - lastPlain >= 5000) {
        lastPlain = p.elapsedMs;
        stream.write(`${statusLine(p)}\n`);
      }
    },
    end() {
      if (tty) stream.write('\r\x1b[2K');
    },
  };
}
