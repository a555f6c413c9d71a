import {
  DeregisterTargetsCommand,
  DescribeListenersCommand,
  DescribeTargetHealthCommand,
  ElasticLoadBalancingV2Client,
  ModifyListenerCommand,
  RegisterTargetsCommand,
} from '@aws-sdk/client-elastic-load-balancing-v2';
import { DeployError } from '../errors.js';
import { assertSafeBackends, assertSafeWeights } from '../safety.js';
import type { Backend, Router, RouterState, Slot, SlotWindow, Weights } from '../types.js';

export interface AlbRouterOptions {
  client?: ElasticLoadBalancingV2Client;
  region?: string;
  listenerArn: string;
  targetGroups: Record<Slot, string>;
  frontendUrl?: string;
  /** How often `drain` re-reads target health (ALB deregistration takes its delay, default 300 s). */
  pollIntervalMs?: number;
}

/**
 * An AWS Application Load Balancer: the listener's default action forwards to the blue and green
 * target groups with weights (one ModifyListener call: ALB applies it atomically). Target health
 * comes from DescribeTargetHealth; ALB traffic metrics live in CloudWatch, which this driver does not
 * read (`window` is undefined: use the Prometheus analysis source).
 */
export class AlbRouter implements Router {
  readonly kind = 'aws-alb';
  readonly frontendUrl?: string;
  private readonly client: ElasticLoadBalancingV2Client;
  constructor(private readonly opts: AlbRouterOptions) {
    this.client = opts.client ?? new ElasticLoadBalancingV2Client({ region: opts.region });
    this.frontendUrl = opts.frontendUrl;
  }

  private async targets(slot: Slot) {
    const out = await this.client.send(
      new DescribeTargetHealthCommand({ TargetGroupArn: this.opts.targetGroups[slot] }),
    );
    return out.TargetHealthDescriptions ?? [];
  }

  async state(): Promise<RouterState> {
    const out = await this.client.send(new DescribeListenersCommand({ ListenerArns: [this.opts.listenerArn] }));
    const action = out.Listeners?.[0]?.DefaultActions?.find((a) => a.Type === 'forward');
    if (!action)
      throw new DeployError('BULWARK_E_DEPLOY_ROUTER', `listener ${this.opts.listenerArn} has no forward action`);
    const weights: Weights = { blue: 0, green: 0 };
    const groups = action.ForwardConfig?.TargetGroups ?? [{ TargetGroupArn: action.TargetGroupArn, Weight: 1 }];
    const total = groups.reduce((n, g) => n + (g.Weight ?? 1), 0);
    for (const g of groups) {
      for (const slot of ['blue', 'green'] as const)
        if (g.TargetGroupArn === this.opts.targetGroups[slot])
          weights[slot] = total === 0 ? 0 : Math.round(((g.Weight ?? 1) / total) * 100);
    }
    const slotState = async (slot: Slot) => ({
      weight: weights[slot],
      backends: (await this.targets(slot)).map((t) => {
        const s = t.TargetHealth?.State;
        return {
          id: `${t.Target?.Id}:${t.Target?.Port}`,
          url: `http://${t.Target?.Id}:${t.Target?.Port}`,
          state: s === 'healthy' ? ('ready' as const) : s === 'draining' ? ('draining' as const) : ('down' as const),
        };
      }),
    });
    const [blue, green] = await Promise.all([slotState('blue'), slotState('green')]);
    return { kind: this.kind, slots: { blue, green } };
  }

  /** Registers instance addresses in the slot's target group; ECS-managed backends (no url) register themselves. */
  async setBackends(slot: Slot, backends: Backend[]): Promise<void> {
    const managed = backends.filter((b) => !b.url);
    if (managed.length > 0) return;
    assertSafeBackends(slot, backends.length, await this.state());
    const want = backends.map((b) => {
      const u = new URL(b.url!);
      return { Id: u.hostname, Port: Number(u.port || 80) };
    });
    const current = (await this.targets(slot)).map((t) => ({ Id: t.Target!.Id!, Port: t.Target!.Port! }));
    const key = (t: { Id: string; Port: number }) => `${t.Id}:${t.Port}`;
    const wantKeys = new Set(want.map(key));
    const stale = current.filter((t) => !wantKeys.has(key(t)));
    const TargetGroupArn = this.opts.targetGroups[slot];
    if (want.length) await this.client.send(new RegisterTargetsCommand({ TargetGroupArn, Targets: want }));
    if (stale.length) await this.client.send(new DeregisterTargetsCommand({ TargetGroupArn, Targets: stale }));
  }

  async setWeights(weights: Weights): Promise<void> {
    assertSafeWeights(weights, await this.state());
    await this.client.send(
      new ModifyListenerCommand({
        ListenerArn: this.opts.listenerArn,
        DefaultActions: [
          {
            Type: 'forward',
            ForwardConfig: {
              TargetGroups: [
                { TargetGroupArn: this.opts.targetGroups.blue, Weight: weights.blue },
                { TargetGroupArn: this.opts.targetGroups.green, Weight: weights.green },
              ],
            },
          },
        ],
      }),
    );
  }

  async confirmServing(slot: Slot): Promise<boolean> {
    const t = await this.targets(slot);
    return t.length > 0 && t.every((d) => d.TargetHealth?.State === 'healthy');
  }

  async drain(slot: Slot, timeoutMs: number): Promise<boolean> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const t = await this.targets(slot);
      if (!t.some((d) => d.TargetHealth?.State === 'draining')) return true;
      if (Date.now() >= deadline) return false;
      await new Promise((r) => setTimeout(r, this.opts.pollIntervalMs ?? 5000));
    }
  }

  async window(_slot: Slot, _sinceMs: number): Promise<SlotWindow | undefined> {
    return undefined;
  }

  async close(): Promise<void> {
    this.client.destroy();
  }
}
