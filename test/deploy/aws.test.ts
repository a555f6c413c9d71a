import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DescribeServicesCommand, ECSClient, UpdateServiceCommand } from '@aws-sdk/client-ecs';
import {
  DeregisterTargetsCommand,
  DescribeListenersCommand,
  DescribeTargetHealthCommand,
  ElasticLoadBalancingV2Client,
  ModifyListenerCommand,
  RegisterTargetsCommand,
} from '@aws-sdk/client-elastic-load-balancing-v2';
import { mockClient } from 'aws-sdk-client-mock';
import { afterAll, beforeEach, describe, expect, it } from 'vitest';
import { Deployer, type MetricsSource, type SlotWindow, StateStore } from '../../src/deploy/index.js';
import { EcsProvider } from '../../src/deploy/providers/ecs.js';
import { AlbRouter } from '../../src/deploy/routers/alb.js';

// No cloud is reachable here: these drivers are tested against aws-sdk-client-mock.
const BLUE = 'arn:aws:elasticloadbalancing:eu-west-1:1:targetgroup/blue/1';
const GREEN = 'arn:aws:elasticloadbalancing:eu-west-1:1:targetgroup/green/2';
const LISTENER = 'arn:aws:elasticloadbalancing:eu-west-1:1:listener/app/shop/1/1';

describe('aws-alb router (aws-sdk-client-mock)', () => {
  const elb = mockClient(ElasticLoadBalancingV2Client);
  let weights = { blue: 100, green: 0 };
  let health: Record<string, string[]> = {};
  const router = () =>
    new AlbRouter({
      client: new ElasticLoadBalancingV2Client({ region: 'eu-west-1' }),
      listenerArn: LISTENER,
      targetGroups: { blue: BLUE, green: GREEN },
      pollIntervalMs: 1,
    });

  beforeEach(() => {
    elb.reset();
    weights = { blue: 100, green: 0 };
    health = { [BLUE]: ['healthy'], [GREEN]: [] };
    elb.on(DescribeListenersCommand).callsFake(() => ({
      Listeners: [
        {
          ListenerArn: LISTENER,
          DefaultActions: [
            {
              Type: 'forward',
              ForwardConfig: {
                TargetGroups: [
                  { TargetGroupArn: BLUE, Weight: weights.blue },
                  { TargetGroupArn: GREEN, Weight: weights.green },
                ],
              },
            },
          ],
        },
      ],
    }));
    elb.on(DescribeTargetHealthCommand).callsFake((input: { TargetGroupArn: string }) => ({
      TargetHealthDescriptions: (health[input.TargetGroupArn] ?? []).map((State, i) => ({
        Target: { Id: `10.0.0.${i + 1}`, Port: 8000 },
        TargetHealth: { State },
      })),
    }));
    elb.on(ModifyListenerCommand).callsFake((input) => {
      const groups = input.DefaultActions[0].ForwardConfig.TargetGroups;
      weights = { blue: groups[0].Weight, green: groups[1].Weight };
      return {};
    });
    elb.on(RegisterTargetsCommand).resolves({});
    elb.on(DeregisterTargetsCommand).resolves({});
  });

  it('reads weights from the listener default action and health from the target groups', async () => {
    const st = await router().state();
    expect(st.slots.blue).toMatchObject({ weight: 100, backends: [{ state: 'ready' }] });
    expect(st.slots.green).toMatchObject({ weight: 0, backends: [] });
  });

  it('refuses to forward to a target group with no healthy target (make-before-break)', async () => {
    health[GREEN] = ['initial'];
    await expect(router().setWeights({ blue: 0, green: 100 })).rejects.toMatchObject({
      code: 'BULWARK_E_DEPLOY_UNSAFE',
    });
    expect(elb.commandCalls(ModifyListenerCommand)).toHaveLength(0);
    expect(await router().confirmServing('green')).toBe(false);
  });

  it('switches with one ModifyListener carrying both weighted target groups', async () => {
    health[GREEN] = ['healthy', 'healthy'];
    expect(await router().confirmServing('green')).toBe(true);
    await router().setWeights({ blue: 90, green: 10 });
    const call = elb.commandCalls(ModifyListenerCommand)[0]!.args[0].input;
    expect(call.DefaultActions?.[0]?.ForwardConfig?.TargetGroups).toEqual([
      { TargetGroupArn: BLUE, Weight: 90 },
      { TargetGroupArn: GREEN, Weight: 10 },
    ]);
    expect((await router().state()).slots.green.weight).toBe(10);
  });

  it('registers instance targets and deregisters stale ones; ECS-managed backends are left to ECS', async () => {
    health[GREEN] = ['healthy'];
    await router().setBackends('green', [{ id: 'g1', url: 'http://10.0.0.9:8000' }]);
    expect(elb.commandCalls(RegisterTargetsCommand)[0]!.args[0].input).toEqual({
      TargetGroupArn: GREEN,
      Targets: [{ Id: '10.0.0.9', Port: 8000 }],
    });
    expect(elb.commandCalls(DeregisterTargetsCommand)[0]!.args[0].input.Targets).toEqual([
      { Id: '10.0.0.1', Port: 8000 },
    ]);
    elb.resetHistory();
    await router().setBackends('green', [{ id: 'ecs:prod/shop-green' }]);
    expect(elb.commandCalls(RegisterTargetsCommand)).toHaveLength(0);
  });

  it('drains until no target of the slot is draining', async () => {
    health[BLUE] = ['draining'];
    let calls = 0;
    elb.on(DescribeTargetHealthCommand).callsFake(() => {
      calls++;
      return {
        TargetHealthDescriptions: [
          { Target: { Id: '10.0.0.1', Port: 8000 }, TargetHealth: { State: calls > 1 ? 'unused' : 'draining' } },
        ],
      };
    });
    expect(await router().drain('blue', 30_000)).toBe(true);
    expect(await router().window('blue', 0)).toBeUndefined();
  });
});

describe('aws-ecs provider (aws-sdk-client-mock)', () => {
  const ecs = mockClient(ECSClient);
  beforeEach(() => ecs.reset());
  const provider = () =>
    new EcsProvider({
      client: new ECSClient({ region: 'eu-west-1' }),
      cluster: 'prod',
      services: { blue: 'shop-blue', green: 'shop-green' },
      taskDefinition: 'shop:{version}',
      desiredCount: 2,
      pollIntervalMs: 1,
      stableTimeoutMs: 5000,
    });

  it('updates the idle slot service to the version and waits for a steady state on it', async () => {
    ecs.on(UpdateServiceCommand).resolves({});
    ecs
      .on(DescribeServicesCommand)
      .resolvesOnce({
        services: [
          {
            deployments: [
              { taskDefinition: 'arn:aws:ecs:eu-west-1:1:task-definition/shop:7', runningCount: 1, desiredCount: 2 },
              { taskDefinition: 'arn:aws:ecs:eu-west-1:1:task-definition/shop:6', runningCount: 2, desiredCount: 2 },
            ],
          },
        ],
      })
      .resolves({
        services: [
          {
            runningCount: 2,
            desiredCount: 2,
            deployments: [
              { taskDefinition: 'arn:aws:ecs:eu-west-1:1:task-definition/shop:7', runningCount: 2, desiredCount: 2 },
            ],
          },
        ],
      });
    const inst = await provider().start('green', '7');
    expect(ecs.commandCalls(UpdateServiceCommand)[0]!.args[0].input).toMatchObject({
      cluster: 'prod',
      service: 'shop-green',
      taskDefinition: 'shop:7',
      desiredCount: 2,
    });
    expect(ecs.commandCalls(DescribeServicesCommand).length).toBeGreaterThanOrEqual(2);
    expect(inst).toMatchObject({ version: '7', backends: [{ id: 'ecs:prod/shop-green' }] });
    expect(await provider().alive(inst)).toBe(true);
  });

  it('fails when the ECS rollout fails, and when the service never stabilises', async () => {
    ecs.on(UpdateServiceCommand).resolves({});
    ecs.on(DescribeServicesCommand).resolves({
      services: [
        {
          deployments: [
            { taskDefinition: 'shop:8', rolloutState: 'FAILED', rolloutStateReason: 'tasks failed to start' },
          ],
        },
      ],
    });
    await expect(provider().start('green', '8')).rejects.toThrow(/tasks failed to start/);
    ecs
      .on(DescribeServicesCommand)
      .resolves({ services: [{ deployments: [{ taskDefinition: 'shop:8', runningCount: 0, desiredCount: 2 }] }] });
    const slow = new EcsProvider({
      client: new ECSClient({ region: 'eu-west-1' }),
      cluster: 'prod',
      services: { blue: 'b', green: 'g' },
      taskDefinition: 'shop:{version}',
      pollIntervalMs: 1,
      stableTimeoutMs: 50,
    });
    await expect(slow.start('green', '8')).rejects.toMatchObject({ code: 'BULWARK_E_DEPLOY_PROVIDER' });
  });

  it('stops a slot by scaling its service to zero', async () => {
    ecs.on(UpdateServiceCommand).resolves({});
    await provider().stop('blue');
    expect(ecs.commandCalls(UpdateServiceCommand)[0]!.args[0].input).toEqual({
      cluster: 'prod',
      service: 'shop-blue',
      desiredCount: 0,
    });
  });
});

describe('Deployer with aws-alb + aws-ecs (aws-sdk-client-mock)', () => {
  const elb = mockClient(ElasticLoadBalancingV2Client);
  const ecs = mockClient(ECSClient);
  const dir = mkdtempSync(join(tmpdir(), 'bulwark-aws-deploy-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));
  let weights = { blue: 100, green: 0 };
  const taskDefs: Record<string, string> = {};

  beforeEach(() => {
    elb.reset();
    ecs.reset();
    weights = { blue: 100, green: 0 };
    elb.on(DescribeListenersCommand).callsFake(() => ({
      Listeners: [
        {
          DefaultActions: [
            {
              Type: 'forward',
              ForwardConfig: {
                TargetGroups: [
                  { TargetGroupArn: BLUE, Weight: weights.blue },
                  { TargetGroupArn: GREEN, Weight: weights.green },
                ],
              },
            },
          ],
        },
      ],
    }));
    // ECS registers its tasks in the target groups; both groups have healthy targets once their service runs.
    elb.on(DescribeTargetHealthCommand).callsFake((input: { TargetGroupArn: string }) => ({
      TargetHealthDescriptions: taskDefs[input.TargetGroupArn === BLUE ? 'shop-blue' : 'shop-green']
        ? [{ Target: { Id: '10.0.0.1', Port: 8000 }, TargetHealth: { State: 'healthy' } }]
        : [],
    }));
    elb.on(ModifyListenerCommand).callsFake((input) => {
      const g = input.DefaultActions[0].ForwardConfig.TargetGroups;
      weights = { blue: g[0].Weight, green: g[1].Weight };
      return {};
    });
    ecs
      .on(UpdateServiceCommand)
      .callsFake((input: { service: string; taskDefinition?: string; desiredCount: number }) => {
        if (input.desiredCount === 0) delete taskDefs[input.service];
        else taskDefs[input.service] = input.taskDefinition!;
        return {};
      });
    ecs.on(DescribeServicesCommand).callsFake((input: { services: string[] }) => {
      const td = taskDefs[input.services[0]!];
      return {
        services: [
          {
            runningCount: td ? 2 : 0,
            desiredCount: td ? 2 : 0,
            deployments: [
              { taskDefinition: `arn:aws:ecs:eu-west-1:1:task-definition/${td}`, runningCount: 2, desiredCount: 2 },
            ],
          },
        ],
      };
    });
  });

  const make = (badVersion?: string) => {
    // An injected metrics source stands in for Prometheus (the ALB has none of its own).
    const metrics: MetricsSource = {
      async window(_slot, _since, ctx): Promise<SlotWindow> {
        const bad = ctx.version === badVersion;
        return { requests: 500, errors: bad ? 100 : 0, latencyMs: { p99: 50 } };
      },
    };
    return new Deployer({
      app: 'shop',
      router: new AlbRouter({
        client: new ElasticLoadBalancingV2Client({ region: 'eu-west-1' }),
        listenerArn: LISTENER,
        targetGroups: { blue: BLUE, green: GREEN },
        pollIntervalMs: 1,
      }),
      provider: new EcsProvider({
        client: new ECSClient({ region: 'eu-west-1' }),
        cluster: 'prod',
        services: { blue: 'shop-blue', green: 'shop-green' },
        taskDefinition: 'shop:{version}',
        pollIntervalMs: 1,
      }),
      store: new StateStore(dir, 'shop'),
      metrics,
      plan: {
        strategy: 'canary',
        healthChecks: [],
        analysis: { minRequests: 100, maxErrorRate: 0.01, intervalMs: 20 },
        blueGreen: { monitorMs: 60, keepOldForMs: 0 },
        canary: { steps: [{ weight: 10, pauseMs: 60 }], keepOldForMs: 0 },
        abort: { newSlot: 'stop' },
        drainTimeoutMs: 1000,
      },
      controlPollMs: 5,
    });
  };

  it('canary through weighted target groups, then the old ECS service is scaled to zero', async () => {
    await make().deploy('1');
    expect(weights).toEqual({ blue: 100, green: 0 });
    const d = await make().deploy('2');
    expect(d.status).toBe('succeeded');
    const sent = elb
      .commandCalls(ModifyListenerCommand)
      .map((c) => c.args[0].input.DefaultActions?.[0]?.ForwardConfig?.TargetGroups?.map((g) => g.Weight));
    expect(sent).toEqual([
      [100, 0],
      [90, 10],
      [0, 100],
    ]);
    expect(taskDefs).toEqual({ 'shop-green': 'shop:2' });
  });

  it('a failing analysis sends all traffic back to the stable target group and scales the canary service down', async () => {
    await expect(make('3').deploy('3')).rejects.toMatchObject({ code: 'BULWARK_E_DEPLOY_FAILED' });
    expect(weights).toEqual({ blue: 0, green: 100 });
    expect(taskDefs).toEqual({ 'shop-green': 'shop:2' });
  });
});
