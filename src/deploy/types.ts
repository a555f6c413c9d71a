/**
 * The deploy model: an app has two slots, blue and green; each slot runs instances of one version;
 * a router splits traffic between the slots by weight (0..100, summing to 100).
 */
export type Slot = 'blue' | 'green';
export const SLOTS: readonly Slot[] = ['blue', 'green'];
export function otherSlot(slot: Slot): Slot {
  return slot === 'blue' ? 'green' : 'blue';
}

/** One instance a router can send requests to. `url` is absent when the platform routes by itself (ECS). */
export interface Backend {
  id: string;
  url?: string;
}

export type Weights = Record<Slot, number>;

export interface RouterSlotState {
  weight: number;
  /** Open upgraded connections (WebSocket tunnels) pinned to this slot, where the router tunnels them. */
  tunnels?: number;
  backends: Array<Backend & { state: 'ready' | 'draining' | 'down'; inFlight?: number }>;
}

export interface RouterState {
  kind: string;
  slots: Record<Slot, RouterSlotState>;
}

/**
 * Counts and latency of one slot over a window, as the router saw them. `latencyMs` holds exact
 * percentiles when the router keeps histograms (embedded), only avg/max when it keeps averages (HAProxy).
 */
export interface SlotWindow {
  requests: number;
  /** 5xx answers and requests the router could not forward. */
  errors: number;
  latencyMs: { p50?: number; p90?: number; p95?: number; p99?: number; avg?: number; max?: number };
}

/**
 * A traffic router. Contract every driver keeps (test/deploy/router-conformance.ts):
 * - `setBackends` replaces a slot's instances; instances that leave finish their in-flight requests.
 * - `setWeights` applies both slots' weights as one change, adding capacity before removing any
 *   (make-before-break); it refuses weights that give traffic to a slot with no ready backend.
 * - `confirmServing(slot)` resolves true only when the router itself can reach that slot.
 * - `drain(slot)` resolves when the slot has no request in flight (or the timeout passed: returns false).
 * - `window(slot, sinceMs)` is the slot's traffic since that epoch-ms, or undefined when the driver
 *   cannot see traffic (use a Prometheus source then).
 */
export interface Router {
  readonly kind: string;
  state(): Promise<RouterState>;
  setBackends(slot: Slot, backends: Backend[]): Promise<void>;
  setWeights(weights: Weights): Promise<void>;
  confirmServing(slot: Slot, path?: string): Promise<boolean>;
  drain(slot: Slot, timeoutMs: number): Promise<boolean>;
  window(slot: Slot, sinceMs: number): Promise<SlotWindow | undefined>;
  /** The URL clients use, when known (probes, synthetic traffic). */
  frontendUrl?: string;
  close(): Promise<void>;
}

/** What a provider started for one slot; persisted in the deploy state so another process can stop it. */
export interface SlotInstances {
  version: string;
  backends: Backend[];
  /** Driver-specific data needed to stop the instances later (PIDs, service names). */
  handles: unknown[];
  startedAt: string;
}

/**
 * Starts and stops a slot's instances. Contract: `start` resolves only once every instance answers its
 * readiness check (or rejects and leaves nothing running); `stop` is called only for a slot the router
 * sends no traffic to, after draining, and sends SIGTERM (or the platform's equivalent) first.
 */
export interface Provider {
  readonly kind: string;
  start(slot: Slot, version: string, options?: { signal?: AbortSignal }): Promise<SlotInstances>;
  stop(slot: Slot, instances: SlotInstances): Promise<void>;
  /** True when every instance recorded in `instances` is still running. */
  alive(instances: SlotInstances): Promise<boolean>;
}
