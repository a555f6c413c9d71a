import { describe, expect, it } from 'vitest';
import { parseDuration, parseSize } from '../../src/config/duration.js';

describe('parseDuration', () => {
  it('reads k6-style durations', () => {
    expect(parseDuration('30s')).toBe(30_000);
    expect(parseDuration('1m30s')).toBe(90_000);
    expect(parseDuration('250ms')).toBe(250);
    expect(parseDuration('1.5s')).toBe(1500);
    expect(parseDuration('2h')).toBe(7_200_000);
    expect(parseDuration(1200)).toBe(1200);
    expect(parseDuration('10')).toBe(10_000);
  });
  it('rejects junk with the option name and exit code 2', () => {
    expect(() => parseDuration('10 parsecs', 'load.duration')).toThrow(/load\.duration: "10 parsecs"/);
    expect(() => parseDuration('s30')).toThrow();
    expect(() => parseDuration('')).toThrow();
    try {
      parseDuration('x');
    } catch (err) {
      expect((err as { exitCode: number }).exitCode).toBe(2);
    }
  });
  it('reads sizes', () => {
    expect(parseSize('64MB')).toBe(64 * 1024 * 1024);
    expect(parseSize('1GiB')).toBe(1024 ** 3);
    expect(() => parseSize('lots')).toThrow(/lots/);
  });
});
