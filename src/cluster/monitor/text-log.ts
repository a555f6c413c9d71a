import { pino } from 'pino';
import { type Logger, redactPaths } from '../../lib/log.js';

const LEVELS: Record<number, string> = { 10: 'TRACE', 20: 'DEBUG', 30: 'INFO', 40: 'WARN', 50: 'ERROR', 60: 'FATAL' };

/**
 * The monitor's log for people: one line per record, `time LEVEL sentence`, then the evidence as
 * compact JSON on the same line. Same records and redaction as the JSON log (`--log-format json`).
 */
export function createTextLogger(level = process.env.BULWARK_LOG_LEVEL ?? 'info'): Logger {
  const stream = {
    write(line: string) {
      try {
        const { time, level: lv, msg, name: _n, ...rest } = JSON.parse(line);
        const extra = Object.keys(rest).length ? ` ${JSON.stringify(rest)}` : '';
        process.stderr.write(`${new Date(time).toISOString()} ${LEVELS[lv] ?? lv} ${msg ?? ''}${extra}\n`);
      } catch {
        process.stderr.write(line);
      }
    },
  };
  return pino({ level, base: undefined, redact: { paths: redactPaths, censor: '[redacted]' } }, stream);
}
