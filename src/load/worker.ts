import { pathToFileURL } from 'node:url';
import { parentPort, workerData } from 'node:worker_threads';
import { resetData } from './data.js';
import { Engine, type EngineOptions } from './engine.js';

/**
 * A worker thread: imports the same bundled scenario file, runs its share of the plan and posts
 * metric deltas (histograms, never percentiles) to the main thread once a second.
 */
type WorkerInit = Omit<EngineOptions, 'scenario' | 'onFlush'> & { bundlePath: string };

const init = workerData as WorkerInit;
process.setSourceMapsEnabled(true);
resetData(init.sharedData);
const mod = await import(pathToFileURL(init.bundlePath).href);
const engine = new Engine({
  ...init,
  scenario: mod.default,
  onFlush: (message) => parentPort!.postMessage({ type: 'flush', message }),
});
parentPort!.on('message', (m: { type: string }) => {
  if (m.type === 'stop') engine.requestStop();
});
try {
  await engine.run();
  parentPort!.postMessage({ type: 'done' });
} catch (err) {
  parentPort!.postMessage({ type: 'error', message: (err as Error)?.stack ?? String(err) });
}
