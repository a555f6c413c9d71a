import type { RequestRecorder, RequestSample } from './http/types.js';
import { encodeHistogram, newHistogram, recordMs } from './metrics/histogram.js';
import type { MetricsStore, Series, SeriesDelta } from './metrics/store.js';

/** A row of the errors table: what went wrong, where, how often. */
export interface ErrorRow {
  kind: 'request' | 'exception';
  /** 'connection refused', 'HTTP 5xx', 'expect: no products', or an exception's message. */
  error: string;
  /** Endpoint name for request errors; 'file:line' (or the task's name) for exceptions. */
  where: string;
  count: number;
}

/** One flush interval of one thread (feeds the time series of the report and the live view). */
export interface IntervalDelta {
  requests: number;
  failures: number;
  iterations: number;
  hist?: number[];
  /** Per endpoint ("GET /api/products"): requests and the latency histogram of the interval. */
  endpoints?: Array<{ endpoint: string; requests: number; hist: number[] }>;
}

/** One endpoint's requests in the current interval (per-endpoint latency over time). */
export interface EndpointInterval {
  endpoint: string;
  requests: number;
  hist: ReturnType<typeof newHistogram>;
}

/** Endpoints followed over time; more share "(other)", so memory stays bounded. */
const MAX_TIMELINE_ENDPOINTS = 30;

export interface FlushMessage {
  deltas: SeriesDelta[];
  interval: IntervalDelta;
  errors: ErrorRow[];
  vus: number;
}

const MAX_ERROR_ROWS = 200;
const MAX_ENDPOINT_GROUPS = 2000;

/**
 * A thread's recording side. Series are cached per tag combination by the per-user-type recorders,
 * so recording a request costs one Map lookup and a few additions; flush() hands out the changes
 * since the previous flush and resets, so memory stays flat however long the run.
 */
export class ThreadMetrics {
  readonly intervalHist = newHistogram();
  intervalRequests = 0;
  intervalFailures = 0;
  intervalIterations = 0;
  readonly errors = new Map<string, ErrorRow>();
  readonly endpointIntervals = new Map<string, EndpointInterval>();
  readonly dataSent: Series;
  readonly dataReceived: Series;
  readonly dropped: Series;
  readonly interruptedRequests: Series;
  endpointGroups = 0;
  /** Set when a hard stop begins: samples of interrupted work are not counted. */
  muted = false;

  constructor(
    readonly store: MetricsStore,
    readonly globalTags: Record<string, string>,
  ) {
    this.dataSent = store.get('data_sent', 'counter', { ...globalTags });
    this.dataReceived = store.get('data_received', 'counter', { ...globalTags });
    this.dropped = store.get('dropped_iterations', 'counter', { ...globalTags });
    this.interruptedRequests = store.get('interrupted_requests', 'counter', { ...globalTags });
  }

  /** A user type's recorder; `tags` (a named scenario's) are added to each of its samples. */
  forUser(userType: string, tags?: Record<string, string>): UserRecorder {
    return new UserRecorder(
      this,
      userType,
      tags && Object.keys(tags).length ? { ...this.globalTags, ...tags } : undefined,
    );
  }

  error(kind: ErrorRow['kind'], error: string, where: string): void {
    const key = `${kind}\u0000${error}\u0000${where}`;
    let row = this.errors.get(key);
    if (!row) {
      if (this.errors.size >= MAX_ERROR_ROWS) {
        if (error !== '(other errors)') this.error(kind, '(other errors)', '');
        return;
      }
      row = { kind, error, where, count: 0 };
      this.errors.set(key, row);
    }
    row.count++;
  }

  /** The interval record of an endpoint (looked up once per series, not per request). */
  endpointInterval(method: string, name: string): EndpointInterval {
    let endpoint = `${method} ${name}`;
    if (!this.endpointIntervals.has(endpoint) && this.endpointIntervals.size >= MAX_TIMELINE_ENDPOINTS)
      endpoint = '(other)';
    let e = this.endpointIntervals.get(endpoint);
    if (!e) {
      e = { endpoint, requests: 0, hist: newHistogram() };
      this.endpointIntervals.set(endpoint, e);
    }
    return e;
  }

  flush(vus: number): FlushMessage {
    const endpoints: NonNullable<IntervalDelta['endpoints']> = [];
    for (const e of this.endpointIntervals.values()) {
      if (e.requests === 0) continue;
      endpoints.push({ endpoint: e.endpoint, requests: e.requests, hist: encodeHistogram(e.hist) });
      e.requests = 0;
      e.hist.reset();
    }
    const interval: IntervalDelta = {
      requests: this.intervalRequests,
      failures: this.intervalFailures,
      iterations: this.intervalIterations,
      hist: this.intervalRequests ? encodeHistogram(this.intervalHist) : undefined,
      endpoints: endpoints.length ? endpoints : undefined,
    };
    this.intervalHist.reset();
    this.intervalRequests = 0;
    this.intervalFailures = 0;
    this.intervalIterations = 0;
    const errors: ErrorRow[] = [];
    for (const r of this.errors.values()) {
      if (r.count > 0) errors.push({ ...r });
      r.count = 0;
    }
    return { deltas: this.store.takeDelta(), interval, errors, vus };
  }
}

interface HttpGroup {
  reqs: Series;
  duration: Series;
  failed: Series;
  interval: EndpointInterval;
}

/** Recording for one user type: its `user` tag is part of every series it writes. */
export class UserRecorder implements RequestRecorder {
  // name -> method -> status -> series: lookups on the scenario's own (interned) strings and a number,
  // so recording a request builds no key string.
  private readonly byName = new Map<string, Map<string, Map<number, HttpGroup>>>();
  private readonly tagged = new Map<string, HttpGroup>();
  private iterationSeries: { count: Series; duration: Series } | undefined;
  private readonly checkSeries = new Map<string, Series>();

  private readonly baseTags: Record<string, string>;
  constructor(
    readonly thread: ThreadMetrics,
    readonly userType: string,
    tags?: Record<string, string>,
  ) {
    this.baseTags = tags ?? thread.globalTags;
  }

  request(s: RequestSample): void {
    const t = this.thread;
    if (t.muted) return;
    let g: HttpGroup | undefined;
    if (s.tags) {
      let key = `${s.name}\u0000${s.method}\u0000${s.status}`;
      for (const k in s.tags) key += `\u0000${k}=${s.tags[k]}`;
      g = this.tagged.get(key);
      if (!g) {
        g = this.newGroup(s, s.name);
        this.tagged.set(key, g);
      }
    } else {
      let name = s.name;
      let byMethod = this.byName.get(name);
      if (!byMethod) {
        // Unbounded names (a raw id in every URL) must not grow memory: past the cap they share '(other)'.
        if (this.thread.endpointGroups >= MAX_ENDPOINT_GROUPS) name = '(other)';
        else this.thread.endpointGroups++;
        byMethod = this.byName.get(name);
        if (!byMethod) {
          byMethod = new Map();
          this.byName.set(name, byMethod);
        }
      }
      let byStatus = byMethod.get(s.method);
      if (!byStatus) {
        byStatus = new Map();
        byMethod.set(s.method, byStatus);
      }
      g = byStatus.get(s.status);
      if (!g) {
        g = this.newGroup(s, name);
        byStatus.set(s.status, g);
      }
    }
    g.reqs.add(1);
    g.duration.add(s.durationMs);
    g.interval.requests++;
    recordMs(g.interval.hist, s.durationMs);
    g.failed.add(s.failed ? 1 : 0);
    t.dataSent.add(s.bytesSent);
    t.dataReceived.add(s.bytesReceived);
    t.intervalRequests++;
    recordMs(t.intervalHist, s.durationMs);
    if (s.failed) {
      t.intervalFailures++;
      t.error('request', s.failure ?? 'failed', s.name);
    }
  }

  /** Counted even after a hard stop began: it is what the hard stop did. */
  interrupted(): void {
    this.thread.interruptedRequests.add(1);
  }

  private newGroup(s: RequestSample, name: string): HttpGroup {
    const tags = {
      ...this.baseTags,
      ...s.tags,
      name,
      method: s.method,
      status: String(s.status),
      user: this.userType,
    };
    const store = this.thread.store;
    return {
      reqs: store.get('http_reqs', 'counter', tags),
      duration: store.get('http_req_duration', 'trend', tags),
      failed: store.get('http_req_failed', 'rate', tags),
      interval: this.thread.endpointInterval(s.method, name),
    };
  }

  iteration(durationMs: number): void {
    if (this.thread.muted) return;
    if (!this.iterationSeries) {
      const tags = { ...this.baseTags, user: this.userType };
      const store = this.thread.store;
      this.iterationSeries = {
        count: store.get('iterations', 'counter', tags),
        duration: store.get('iteration_duration', 'trend', tags),
      };
    }
    this.iterationSeries.count.add(1);
    this.iterationSeries.duration.add(durationMs);
    this.thread.intervalIterations++;
  }

  check(name: string, ok: boolean, tags?: Record<string, string>): void {
    if (this.thread.muted) return;
    const key = tags ? `${name}\u0000${JSON.stringify(tags)}` : name;
    let s = this.checkSeries.get(key);
    if (!s) {
      s = this.thread.store.get('checks', 'rate', {
        ...this.baseTags,
        ...tags,
        check: name,
        user: this.userType,
      });
      this.checkSeries.set(key, s);
    }
    s.add(ok ? 1 : 0);
  }

  exception(err: unknown, where: string): void {
    if (this.thread.muted) return;
    const message = err instanceof Error ? `${err.name === 'Error' ? '' : `${err.name}: `}${err.message}` : String(err);
    this.thread.error('exception', message.slice(0, 200), where);
  }
}
