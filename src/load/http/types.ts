/** Per-request timings in milliseconds (as k6's res.timings). */
export interface Timings {
  /** Time to open the TCP connection (0 when a kept-alive one was reused). */
  connect: number;
  /** Time to first byte: request sent -> response headers. */
  waiting: number;
  /** Response headers -> last body byte. */
  receiving: number;
  /** sending + waiting + receiving: what http_req_duration records (connect excluded, as k6). */
  duration: number;
}

export interface HttpResponse {
  /** HTTP status, or 0 when no response arrived (connection refused, reset, timeout). */
  readonly status: number;
  readonly headers: Record<string, string | string[]>;
  /** The body as text. */
  readonly body: string;
  /** The body as bytes. */
  readonly bodyBytes: Buffer;
  /** The body parsed as JSON (cached); throws on invalid JSON. */
  json<T = any>(): T;
  readonly timings: Timings;
  readonly url: string;
  /** The endpoint name the request was recorded under. */
  readonly name: string;
  /** Error class when the request failed without a response ('connection refused', 'timeout', ...). */
  readonly error?: string;
  /** True when the request counted as a success (see `expect`). */
  readonly ok: boolean;
}

/**
 * Decides whether a response is a success (Locust's catch_response). Return true (or nothing) for
 * success, false or a reason string for failure. Throwing counts as failure with the error's message.
 * Without `expect`, status >= 400 and network errors are failures.
 */
export type Expectation = (response: HttpResponse) => unknown;

export interface RequestOptions {
  headers?: Record<string, string>;
  /** Sent as JSON with content-type application/json. */
  json?: unknown;
  body?: string | Buffer | Uint8Array;
  /** Added to the URL's query string. */
  query?: Record<string, string | number | boolean>;
  /** Endpoint name for metrics and reports (default: the URL as given, e.g. '/api/products?page=2'). */
  name?: string;
  /** Extra tags for this request's metric samples. */
  tags?: Record<string, string>;
  /** '10s' or milliseconds (default: the scenario's timeout, else 60s). */
  timeout?: string | number;
  expect?: Expectation;
  /** Redirects to follow (default 10, or the scenario's `redirects`); 0 returns the 3xx response itself. */
  redirects?: number;
}

/** One request of `vu.http.batch`: a URL (GET), `[method, url, options?]` or `{ method?, url, options? }`. */
export type BatchRequest =
  | string
  | [method: string, url: string, options?: RequestOptions]
  | { method?: string; url: string; options?: RequestOptions };

export interface HttpClient {
  get(url: string, options?: RequestOptions): Promise<HttpResponse>;
  post(url: string, options?: RequestOptions): Promise<HttpResponse>;
  put(url: string, options?: RequestOptions): Promise<HttpResponse>;
  patch(url: string, options?: RequestOptions): Promise<HttpResponse>;
  delete(url: string, options?: RequestOptions): Promise<HttpResponse>;
  head(url: string, options?: RequestOptions): Promise<HttpResponse>;
  request(method: string, url: string, options?: RequestOptions): Promise<HttpResponse>;
  /** Send several requests in parallel (k6's http.batch); responses in the order of the requests. */
  batch(requests: BatchRequest[]): Promise<HttpResponse[]>;
  /** This VU's cookies for a host. */
  cookies(host?: string): Record<string, string>;
}

/** One finished request, as the engine records it. */
export interface RequestSample {
  name: string;
  method: string;
  status: number;
  durationMs: number;
  failed: boolean;
  /** Why it failed: 'connection refused', 'timeout', 'HTTP 5xx', 'expect: <reason>', ... */
  failure?: string;
  bytesSent: number;
  bytesReceived: number;
  tags?: Record<string, string>;
}

export interface RequestRecorder {
  request(sample: RequestSample): void;
  /** A request abandoned when its VU was interrupted: counted, never timed. */
  interrupted(): void;
}
