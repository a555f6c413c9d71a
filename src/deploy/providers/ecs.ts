import { DescribeServicesCommand, ECSClient, UpdateServiceCommand } from '@aws-sdk/client-ecs';
import { DeployError } from '../errors.js';
import type { Provider, Slot, SlotInstances } from '../types.js';

export interface EcsProviderOptions {
  client?: ECSClient;
  region?: string;
  cluster: string;
  /** One ECS service per slot, each attached to that slot's target group. */
  services: Record<Slot, string>;
  /** Task definition for a version, {version} substituted: "shop:{version}". */
  taskDefinition: string;
  desiredCount?: number;
  stableTimeoutMs?: number;
  pollIntervalMs?: number;
}

/**
 * Instances as an ECS service per slot (the origin document's setup, with its two gaps closed: the
 * steady-state wait checks the new task definition, and stopping scales the idle service to zero).
 */
export class EcsProvider implements Provider {
  readonly kind = 'aws-ecs';
  private readonly client: ECSClient;
  constructor(private readonly opts: EcsProviderOptions) {
    this.client = opts.client ?? new ECSClient({ region: opts.region });
  }

  async start(slot: Slot, version: string, options: { signal?: AbortSignal } = {}): Promise<SlotInstances> {
    const service = this.opts.services[slot];
    const taskDefinition = this.opts.taskDefinition.replaceAll('{version}', version);
    const desiredCount = this.opts.desiredCount ?? 2;
    await this.client.send(
      new UpdateServiceCommand({
        cluster: this.opts.cluster,
        service,
        taskDefinition,
        desiredCount,
        forceNewDeployment: true,
      }),
    );
    await this.waitStable(service, taskDefinition, desiredCount, options.signal);
    return {
      version,
      backends: [{ id: `ecs:${this.opts.cluster}/${service}` }],
      handles: [{ cluster: this.opts.cluster, service }],
      startedAt: new Date().toISOString(),
    };
  }

  /** Steady state: one deployment left, on our task definition, running what it wants. */
  private async waitStable(
    service: string,
    taskDefinition: string,
    desired: number,
    signal?: AbortSignal,
  ): Promise<void> {
    const deadline = Date.now() + (this.opts.stableTimeoutMs ?? 600_000);
    let last = 'no answer';
    while (Date.now() < deadline) {
      if (signal?.aborted) throw new DeployError('BULWARK_E_DEPLOY_ABORTED', 'aborted while waiting for ECS');
      const out = await this.client.send(
        new DescribeServicesCommand({ cluster: this.opts.cluster, services: [service] }),
      );
      const svc = out.services?.[0];
      if (!svc)
        throw new DeployError('BULWARK_E_DEPLOY_PROVIDER', `ECS service ${service} not found in ${this.opts.cluster}`);
      const deployments = svc.deployments ?? [];
      const d = deployments[0];
      const onOurs = d?.taskDefinition?.includes(taskDefinition.split('/').pop()!) ?? false;
      if (d?.rolloutState === 'FAILED')
        throw new DeployError(
          'BULWARK_E_DEPLOY_PROVIDER',
          `ECS rollout of ${service} failed: ${d.rolloutStateReason ?? ''}`,
        );
      if (deployments.length === 1 && onOurs && d!.runningCount === desired && d!.desiredCount === desired) return;
      last = `${deployments.length} deployments, running ${d?.runningCount ?? 0}/${desired}`;
      await new Promise((r) => setTimeout(r, this.opts.pollIntervalMs ?? 10_000));
    }
    throw new DeployError('BULWARK_E_DEPLOY_PROVIDER', `ECS service ${service} not stable in time (${last})`);
  }

  async stop(slot: Slot): Promise<void> {
    await this.client.send(
      new UpdateServiceCommand({ cluster: this.opts.cluster, service: this.opts.services[slot], desiredCount: 0 }),
    );
  }

  async alive(instances: SlotInstances): Promise<boolean> {
    const [h] = instances.handles as Array<{ cluster: string; service: string }>;
    if (!h) return false;
    const out = await this.client.send(new DescribeServicesCommand({ cluster: h.cluster, services: [h.service] }));
    const svc = out.services?.[0];
    return !!svc && (svc.runningCount ?? 0) > 0 && svc.runningCount === svc.desiredCount;
  }
}
