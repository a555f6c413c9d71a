/**
 * Test data loaded once per run and shared (k6's SharedArray): `data(name, load)` runs `load` once,
 * in the main thread while the scenario is loaded; worker threads and remote workers receive the
 * value with their share of the run instead of loading it again (so files next to the scenario need
 * not exist on a load host). Every VU of a thread sees the same deeply frozen value.
 */
const values = new Map<string, unknown>();
let preloaded: Record<string, unknown> = {};

function deepFreeze<T>(value: T): T {
  if (value && typeof value === 'object' && !Object.isFrozen(value)) {
    Object.freeze(value);
    for (const v of Object.values(value)) deepFreeze(v);
  }
  return value;
}

/**
 * Load test data once and share it with every VU (and thread, and remote worker) of the run. The
 * value must survive JSON (arrays, objects, strings, numbers); it is frozen: VUs cannot change it.
 */
export function data<T>(name: string, load: () => T): T {
  if (values.has(name)) return values.get(name) as T;
  const value = Object.hasOwn(preloaded, name) ? (preloaded[name] as T) : load();
  if (value && typeof (value as { then?: unknown }).then === 'function')
    throw new Error(`data("${name}"): the loader must return the data itself, not a promise`);
  values.set(name, deepFreeze(value));
  return value;
}

/** Start a run: forget the previous run's data; use `from` (sent by the main thread) instead of loading. */
export function resetData(from: Record<string, unknown> = {}): void {
  values.clear();
  preloaded = from;
}

/** Everything data() loaded in this thread, to hand to workers. */
export function loadedData(): Record<string, unknown> {
  return Object.fromEntries(values);
}
