/**
 * A counter that only moves in a macrotask (a response's headers arrived, a sleep's timer fired).
 * A VU loop compares it before and after an iteration: unchanged means the iteration ran entirely in
 * the microtask queue (a task that throws before its first await, a relative URL without host), and
 * looping again at once would starve timers and signal handlers forever. Such a loop yields with
 * setImmediate; an iteration that did real I/O pays nothing.
 */
export const turns = { n: 0 };

/** Let timers, I/O and signal handlers run before continuing. */
export function yieldToEventLoop(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}
