import { pino } from 'pino';

/**
 * Structured logs on stderr (stdout is for results users pipe). Secrets are redacted by key so a
 * config object or a connection string never reaches a log line in clear.
 */
export const redactPaths = [
  'password',
  'passphrase',
  'secret',
  'token',
  'authorization',
  '*.password',
  '*.passphrase',
  '*.secret',
  '*.token',
  '*.authorization',
  '*.secretAccessKey',
];

export type Logger = pino.Logger;

export function createLogger(options: { level?: string; name?: string } = {}): Logger {
  return pino(
    {
      name: options.name ?? 'bulwark',
      level: options.level ?? process.env.BULWARK_LOG_LEVEL ?? 'info',
      redact: { paths: redactPaths, censor: '[redacted]' },
      base: undefined,
    },
    pino.destination({ fd: 2, sync: true }),
  );
}

/** Replace the password of a connection URL with `***` for display. */
export function redactUrl(url: string): string {
  try {
    const u = new URL(url);
    if (u.password) u.password = '***';
    return u.toString();
  } catch {
    return url.replace(/\/\/([^:/@]+):[^@]*@/, '//$1:***@');
  }
}
