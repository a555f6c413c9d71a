import { describe, expect, it } from 'vitest';
import {
  atMost,
  below,
  lostOrders,
  orderKey,
  parseSteps,
  steadyState,
  stepHolds,
  verdict,
  writeGapMs,
} from '../../src/drill/hypothesis.js';
import type { StepResult } from '../../src/drill/types.js';

describe('drill decisions (pure)', () => {
  it('parses --steps by number or name, in drill order, and refuses unknown steps', () => {
    expect(parseSteps(undefined)).toEqual(['backup', 'failover', 'bad-release', 'good-release', 'pitr']);
    expect(parseSteps('all')).toHaveLength(5);
    expect(parseSteps('pitr,2')).toEqual(['failover', 'pitr']);
    expect(() => parseSteps('failover,chaos')).toThrow(/--steps: "chaos" is not a step/);
    expect(() => parseSteps('6')).toThrow(/is not a step/);
  });

  it('the write gap runs from the last order acknowledged before the fault to the first one after it', () => {
    expect(writeGapMs(1000, [500, 900, 3500, 2800])).toBe(1900);
    expect(writeGapMs(1000, [1500])).toBe(500);
    expect(writeGapMs(1000, [500, 900])).toBeNull();
  });

  it('lost orders are the acknowledged orders missing from the table', () => {
    expect(lostOrders([1, 2, 3, 7, 5], [1, 3, 5, 9])).toEqual([2, 7]);
    expect(lostOrders([], [1])).toEqual([]);
  });

  it('regression: an order id handed out again by the new primary does not count as the lost order found', () => {
    // id 80 was acknowledged by the old primary (ref drill-7) and lost; the new primary's sequence gave 80 to drill-9
    const acked = [orderKey(79, 'drill-6'), orderKey(80, 'drill-7')];
    const found = [orderKey('79', 'drill-6'), orderKey('80', 'drill-9')];
    expect(lostOrders(acked, found)).toEqual([orderKey(80, 'drill-7')]);
  });

  it('thresholds: below is strict, atMost includes the limit, an unmeasured value never meets them', () => {
    expect(below('gap', 4999, 5000, 'ms').met).toBe(true);
    expect(below('gap', 5000, 5000, 'ms').met).toBe(false);
    expect(below('gap', null, 5000, 'ms').met).toBe(false);
    expect(atMost('lost', 0, 0)).toMatchObject({ met: true, threshold: '= 0' });
    expect(atMost('lost', 1, 0).met).toBe(false);
  });

  it('a step holds only when it finished, every probe met and both steady states held', () => {
    const ok = steadyState([atMost('failed', 0, 0)]);
    const bad = steadyState([atMost('failed', 3, 0)]);
    const probes = [below('gap', 10, 5000)];
    expect(stepHolds({ probes, before: ok, after: ok })).toBe(true);
    expect(stepHolds({ probes, before: ok, after: bad })).toBe(false);
    expect(stepHolds({ probes, before: bad, after: ok })).toBe(false);
    expect(stepHolds({ probes: [below('gap', 6000, 5000)], before: ok, after: ok })).toBe(false);
    expect(stepHolds({ probes, before: ok, after: ok, error: 'monitor did not fail over' })).toBe(false);
    const step = (name: StepResult['step'], status: StepResult['status']) => ({ step: name, status }) as StepResult;
    expect(verdict([step('backup', 'succeeded'), step('pitr', 'failed')])).toEqual({ ok: false, failed: ['pitr'] });
    expect(verdict([step('backup', 'succeeded')])).toEqual({ ok: true, failed: [] });
    expect(verdict([]).ok).toBe(false);
  });
});
