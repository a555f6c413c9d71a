import { writeFileSync } from 'node:fs';
import type { Summary } from '../summary.js';

const esc = (s: unknown) =>
  String(s).replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&apos;' })[c]!);

/**
 * JUnit XML for CI dashboards: one test case per threshold (failed when crossed) and one per check
 * (failed when any evaluation failed), so a CI server shows what broke without reading logs.
 */
export function renderJunit(s: Summary, suiteName = 'bulwark load'): string {
  const cases: string[] = [];
  for (const t of s.thresholds) {
    const name = `${t.metric} ${t.expression}`;
    cases.push(
      t.ok
        ? `    <testcase classname="thresholds" name="${esc(name)}"/>`
        : `    <testcase classname="thresholds" name="${esc(name)}"><failure message="${esc(`${name}: value ${t.value}`)}"/></testcase>`,
    );
  }
  for (const c of s.checks) {
    cases.push(
      c.fails === 0
        ? `    <testcase classname="checks" name="${esc(c.name)}"/>`
        : `    <testcase classname="checks" name="${esc(c.name)}"><failure message="${esc(`${c.fails} of ${c.passes + c.fails} failed`)}"/></testcase>`,
    );
  }
  const failures = s.thresholds.filter((t) => !t.ok).length + s.checks.filter((c) => c.fails > 0).length;
  return `<?xml version="1.0" encoding="UTF-8"?>
<testsuites>
  <testsuite name="${esc(suiteName)}" tests="${cases.length}" failures="${failures}" time="${s.durationSeconds}">
${cases.join('\n')}
  </testsuite>
</testsuites>
`;
}

/** Endpoints as CSV (one row per endpoint name and method, then TOTAL), for spreadsheets. */
export function renderCsv(s: Summary): string {
  const header = 'name,method,requests,failures,error_rate,rps,avg_ms,p50_ms,p90_ms,p95_ms,p99_ms,max_ms';
  const q = (v: string) => (/[",\n]/.test(v) ? `"${v.replace(/"/g, '""')}"` : v);
  const row = (
    name: string,
    method: string,
    e: {
      requests: number;
      failures: number;
      errorRate: number;
      rps: number;
      latencyMs: Summary['totals']['latencyMs'];
    },
  ) =>
    [
      q(name),
      method,
      e.requests,
      e.failures,
      e.errorRate,
      e.rps,
      e.latencyMs.avg,
      e.latencyMs.p50,
      e.latencyMs.p90,
      e.latencyMs.p95,
      e.latencyMs.p99,
      e.latencyMs.max,
    ].join(',');
  return `${[header, ...s.endpoints.map((e) => row(e.name, e.method, e)), row('TOTAL', '', s.totals)].join('\n')}\n`;
}

export function writeJunit(path: string, s: Summary): void {
  writeFileSync(path, renderJunit(s));
}

export function writeCsv(path: string, s: Summary): void {
  writeFileSync(path, renderCsv(s));
}
