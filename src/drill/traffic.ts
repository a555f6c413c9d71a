import {
  type HttpClient,
  type HttpResponse,
  type LoadResult,
  type Progress,
  runLoad,
  type ScenarioDefinition,
  scenario,
  user,
  type VU,
} from '../load/index.js';
import type { TimelinePoint } from './types.js';

/**
 * The user's own scenario (drill.load) instead of the shopper: its user types, tasks, setup and
 * teardown, run at the drill's open-model rate. `acks` says which answers acknowledge a write: the
 * successful answers of the endpoint named `request`, the id at the JSON path `id` of their body.
 */
export interface UserLoad {
  definition: ScenarioDefinition;
  acks?: { request: string; id: string };
}

/** The value at a dot path of a JSON body (`order.id`), when it is a string or a number. */
export function pickId(body: unknown, path: string): string | undefined {
  let v: unknown = body;
  for (const key of path.split('.')) {
    if (v === null || typeof v !== 'object') return undefined;
    v = (v as Record<string, unknown>)[key];
  }
  return typeof v === 'string' || typeof v === 'number' ? String(v) : undefined;
}

/**
 * The drill's steady open-model traffic through the router: shoppers who log in, list products and
 * place orders, at a constant arrival rate (new iterations start on schedule whatever the latency, so
 * a stall shows as queued work and errors, not as politely fewer requests).
 *
 * Besides what `bulwark load` measures, the drill needs what load cannot know: which orders were
 * acknowledged (201 with an order id) and when — that is what RPO and the write gap are computed from.
 * The scenario runs in this thread (a scenario object, one engine) so it records straight into here.
 */
export class DrillTraffic {
  /** Order ids the shop acknowledged, with the epoch ms the 201 arrived. Bounded by the drill's length. */
  readonly acks: Array<{ id: number | string; ref: string; at: number }> = [];
  private refs = 0;
  /** Orders (orderKey) a failover lost: later steps do not count them against themselves. */
  readonly lost = new Set<string>();
  requests = 0;
  failures = 0;
  lastFailureAt = 0;
  /** Per epoch second: requests and failures (the steady-state probes read the last few seconds). */
  private readonly seconds = new Map<number, { requests: number; failures: number }>();
  private progress?: Progress;
  private controller = new AbortController();
  private running?: Promise<LoadResult>;
  startedAt = 0;

  constructor(private readonly o: { url: string; rate: number; maxDuration?: string; user?: UserLoad }) {}

  /** False when the user's scenario names no acknowledged writes: RTO/RPO from acks are not measured then. */
  get measuresAcks(): boolean {
    return !this.o.user || Boolean(this.o.user.acks);
  }

  /** The user's scenario, each VU's http client recording every answer (and the acknowledged writes). */
  private userScenario(u: UserLoad): ScenarioDefinition {
    const wrapped = new WeakMap<VU, VU>();
    const seen = (r: HttpResponse): HttpResponse => {
      this.record(r);
      if (u.acks && r.ok && r.status >= 200 && r.status < 300 && r.name === u.acks.request) {
        let id: string | undefined;
        try {
          id = pickId(r.json(), u.acks.id);
        } catch {
          // not JSON: not an acknowledgement the drill can check
        }
        if (id !== undefined) this.acks.push({ id, ref: '', at: Date.now() });
      }
      return r;
    };
    const wrap = (vu: VU): VU => {
      let w = wrapped.get(vu);
      if (!w) {
        const http = vu.http;
        const recorded: HttpClient = {
          get: (url, o) => http.get(url, o).then(seen),
          post: (url, o) => http.post(url, o).then(seen),
          put: (url, o) => http.put(url, o).then(seen),
          patch: (url, o) => http.patch(url, o).then(seen),
          delete: (url, o) => http.delete(url, o).then(seen),
          head: (url, o) => http.head(url, o).then(seen),
          request: (method, url, o) => http.request(method, url, o).then(seen),
          batch: (requests) => http.batch(requests).then((rs) => rs.map(seen)),
          cookies: (host) => http.cookies(host),
        };
        // everything else is the VU's own (live iteration counters, state, random, check, sleep)
        w = Object.create(vu, {
          http: { value: recorded },
          state: {
            get: () => vu.state,
            set: (v) => {
              vu.state = v;
            },
          },
        }) as VU;
        wrapped.set(vu, w);
      }
      return w;
    };
    const d = u.definition;
    return scenario({
      host: d.host,
      users: d.users.map((t) => ({
        ...t,
        onStart: t.onStart && ((vu: VU) => t.onStart!(wrap(vu))),
        onStop: t.onStop && ((vu: VU) => t.onStop!(wrap(vu))),
        tasks: t.tasks.map((task) =>
          typeof task === 'function'
            ? { name: task.name || undefined, run: (vu: VU) => task(wrap(vu)) }
            : { ...task, name: task.name ?? (task.run.name || undefined), run: (vu: VU) => task.run(wrap(vu)) },
        ),
      })),
      setup: d.setup,
      teardown: d.teardown,
      tags: d.tags,
      redirects: d.redirects,
      load: this.openModel(),
      timeout: d.timeout ?? '20s',
    });
  }

  /** The drill's steady open-model load: a constant arrival rate whatever the latency. */
  private openModel(): ScenarioDefinition['load'] {
    return {
      executor: 'constant-arrival-rate',
      rate: this.o.rate,
      timeUnit: '1s',
      duration: this.o.maxDuration ?? '30m',
      preAllocatedVUs: Math.max(5, Math.ceil(this.o.rate / 4)),
      maxVUs: Math.max(50, this.o.rate * 20),
      gracefulStop: '3s',
    };
  }

  private record(r: HttpResponse): void {
    const now = Date.now();
    this.requests++;
    const sec = Math.floor(now / 1000);
    let b = this.seconds.get(sec);
    if (!b) {
      b = { requests: 0, failures: 0 };
      this.seconds.set(sec, b);
      for (const k of this.seconds.keys()) if (k < sec - 120) this.seconds.delete(k);
    }
    b.requests++;
    if (!r.ok) {
      this.failures++;
      b.failures++;
      this.lastFailureAt = now;
    }
  }

  /** Requests and failures over the last `ms` (whole seconds, the current one included). */
  recent(ms: number): { requests: number; failures: number } {
    const now = Math.floor(Date.now() / 1000);
    const from = now - Math.ceil(ms / 1000);
    let requests = 0;
    let failures = 0;
    for (const [sec, b] of this.seconds) {
      if (sec > from && sec <= now) {
        requests += b.requests;
        failures += b.failures;
      }
    }
    return { requests, failures };
  }

  snapshot(): { requests: number; failures: number; at: number } {
    return { requests: this.requests, failures: this.failures, at: Date.now() };
  }

  private async login(vu: VU): Promise<void> {
    const r = await vu.http.post('/auth/login', {
      json: { email: `drill${vu.id}@example.com`, password: 'drill' },
      name: '/auth/login',
    });
    this.record(r);
    if (r.status === 200) vu.state.token = r.json().access_token;
  }

  scenario(): ScenarioDefinition {
    if (this.o.user) return this.userScenario(this.o.user);
    const self = this;
    return scenario({
      users: [
        user('Shopper', {
          async onStart(vu) {
            await self.login(vu);
          },
          tasks: [
            {
              weight: 1,
              async run(vu) {
                if (!vu.state.token) return self.login(vu);
                const ref = `drill-${++self.refs}`;
                const r = await vu.http.post('/api/orders', {
                  json: {
                    items: [{ product_id: vu.random.int(1, 100), quantity: vu.random.int(1, 3) }],
                    client_ref: ref,
                  },
                  headers: { authorization: `Bearer ${vu.state.token}` },
                  name: '/api/orders',
                  expect: (res) => res.status === 201,
                });
                self.record(r);
                if (r.status === 201) {
                  const id = Number(/^ord_(\d+)$/.exec(String(r.json().order_id))?.[1]);
                  if (Number.isSafeInteger(id)) self.acks.push({ id, ref, at: Date.now() });
                }
              },
            },
            {
              weight: 1,
              async run(vu) {
                self.record(await vu.http.get('/api/products', { name: '/api/products' }));
              },
            },
          ],
        }),
      ],
      load: this.openModel(),
      timeout: '20s',
    });
  }

  /** Start the load; resolves once the first second of traffic ran. */
  async start(onTick?: (p: Progress) => void): Promise<void> {
    let started!: () => void;
    const first = new Promise<void>((r) => {
      started = r;
    });
    this.running = runLoad({
      scenario: this.scenario(),
      host: this.o.url,
      typecheck: false,
      signal: this.controller.signal,
      onStart: () => {
        this.startedAt = Date.now();
      },
      onProgress: (p) => {
        this.progress = p;
        onTick?.(p);
        started();
      },
    });
    this.running.catch(() => started());
    await first;
  }

  /** Seconds since the load started. */
  elapsedS(at = Date.now()): number {
    return this.startedAt ? (at - this.startedAt) / 1000 : 0;
  }

  /** Stop the load (in-flight iterations finish within gracefulStop); the run's result. */
  async stop(): Promise<LoadResult | undefined> {
    this.controller.abort();
    return this.running?.catch(() => undefined);
  }

  /** The per-second timeline (req/s, errors, latency percentiles) measured by the load engine. */
  timeline(): TimelinePoint[] {
    const agg = this.progress?.aggregate;
    if (!agg) return [];
    agg.closeBuckets();
    return agg.timeline.map((p) => ({ t: p.t, rps: p.rps, errors: p.errors, p50: p.p50, p95: p.p95, p99: p.p99 }));
  }
}
