import type { HttpClient, HttpResponse } from './http/types.js';
import type { VuRandom } from './random.js';

/** Think time between tasks of a closed-model VU. Seconds, as Locust's wait_time. */
export type Wait =
  | { kind: 'between'; min: number; max: number }
  | { kind: 'constant'; seconds: number }
  | { kind: 'none' };

/** Wait a random time between `min` and `max` seconds after each task (Locust's between). */
export function between(min: number, max: number): Wait {
  if (!(min >= 0) || !(max >= min)) throw new Error(`between(${min}, ${max}): need 0 <= min <= max`);
  return { kind: 'between', min, max };
}
/** Wait exactly `seconds` after each task. */
export function constant(seconds: number): Wait {
  if (!(seconds >= 0)) throw new Error(`constant(${seconds}): need seconds >= 0`);
  return { kind: 'constant', seconds };
}
/** No wait: the next task starts as soon as the previous one ends. */
export function none(): Wait {
  return { kind: 'none' };
}

/** A check: true passes; false or a string (the reason) fails. */
export type CheckFn<T> = (value: T) => boolean | string | undefined | null;

/** What a task sees: one virtual user. */
export interface VU {
  /** 1-based id, unique across worker threads of the run. */
  readonly id: number;
  /** The user type's name. */
  readonly userType: string;
  /** Iterations (tasks) this VU has started. */
  readonly iteration: number;
  /**
   * The current iteration's number in its scenario, unique across every thread and host of the run
   * (k6's iterationInTest): 0.. for shared-iterations and arrival-rate executors.
   */
  readonly globalIteration: number;
  /** The scenario this VU runs ("default" without `scenarios`). */
  readonly scenario: string;
  /** Free-form per-VU state (set a token in onStart, read it in tasks). */
  state: Record<string, any>;
  /** HTTP client bound to this VU: one keep-alive connection per origin and a cookie jar. */
  readonly http: HttpClient;
  /** Random helpers (seeded with --seed for repeatable runs). */
  readonly random: VuRandom;
  /** Environment: process.env plus `--env KEY=VALUE` flags. */
  readonly env: Readonly<Record<string, string | undefined>>;
  /** Whatever `setup()` returned. */
  readonly data: any;
  /** Record named checks on a value; returns true when all pass. Checks never fail a request or the run by themselves. */
  check<T>(value: T, checks: Record<string, CheckFn<T>>, tags?: Record<string, string>): boolean;
  /** Pause this VU (seconds). */
  sleep(seconds: number): Promise<void>;
}

export type TaskFn = (vu: VU) => unknown | Promise<unknown>;
export interface Task {
  /** Shown in the errors table; defaults to the function's name. */
  name?: string;
  /** Relative frequency among the user type's tasks (default 1). */
  weight?: number;
  run: TaskFn;
}

export interface UserDefinition {
  /** Share of VUs among user types (default 1). */
  weight?: number;
  /** Think time after each task (default none()). Ignored by arrival-rate executors. */
  wait?: Wait;
  /** Once per VU before its first task (log in here). */
  onStart?: (vu: VU) => unknown | Promise<unknown>;
  /** Once per VU when it stops. */
  onStop?: (vu: VU) => unknown | Promise<unknown>;
  tasks: Array<Task | TaskFn>;
}

export interface UserType extends UserDefinition {
  name: string;
}

/** Declare a user type (Locust's HttpUser class). */
export function user(name: string, definition: UserDefinition): UserType {
  return { name, ...definition };
}

export type Duration = string | number;
export interface Stage {
  duration: Duration;
  target: number;
}

interface CommonLoad {
  /** How long in-flight iterations may finish after the end (default 30s). */
  gracefulStop?: Duration;
}
export interface RampingVusLoad extends CommonLoad {
  executor?: 'ramping-vus';
  startVUs?: number;
  stages: Stage[];
  /** How long iterations of VUs being removed may finish (default 30s). */
  gracefulRampDown?: Duration;
}
export interface ConstantVusLoad extends CommonLoad {
  executor?: 'constant-vus';
  vus: number;
  duration: Duration;
}
export interface ConstantArrivalRateLoad extends CommonLoad {
  executor: 'constant-arrival-rate';
  /** Iterations started per timeUnit. */
  rate: number;
  timeUnit?: Duration;
  duration: Duration;
  preAllocatedVUs?: number;
  maxVUs: number;
}
export interface RampingArrivalRateLoad extends CommonLoad {
  executor: 'ramping-arrival-rate';
  startRate?: number;
  timeUnit?: Duration;
  stages: Stage[];
  preAllocatedVUs?: number;
  maxVUs: number;
}
export interface SharedIterationsLoad extends CommonLoad {
  executor: 'shared-iterations';
  /** VUs sharing the iterations (default 1). */
  vus?: number;
  /** Iterations in all (default 1), taken by whichever VU is free. */
  iterations?: number;
  /** The iterations not started by then are not run (default 10m). */
  maxDuration?: Duration;
}
export interface PerVuIterationsLoad extends CommonLoad {
  executor: 'per-vu-iterations';
  vus?: number;
  /** Iterations each VU runs (default 1). */
  iterations?: number;
  maxDuration?: Duration;
}
/** Locust's LoadTestShape: users at each moment, from a function of the elapsed seconds. */
export interface ShapeLoad extends CommonLoad {
  executor: 'shape';
  /** Called every 100 ms; { users, spawnRate? (users/s, default at once) }, or null to end the scenario. */
  shape: (elapsedSeconds: number) => { users: number; spawnRate?: number } | null | undefined;
  /** The scenario ends then if the shape has not ended it (default 1h). */
  maxDuration?: Duration;
}
export type LoadOptions =
  | RampingVusLoad
  | ConstantVusLoad
  | ConstantArrivalRateLoad
  | RampingArrivalRateLoad
  | SharedIterationsLoad
  | PerVuIterationsLoad
  | ShapeLoad;

/** One named scenario (k6's `scenarios`): a load plus when it starts, its tags and its user types. */
export type NamedScenario = LoadOptions & {
  /** Offset from the start of the run (default 0). */
  startTime?: Duration;
  /** Added to every sample of this scenario, with `scenario: <name>`. */
  tags?: Record<string, string>;
  /** Names of the user types this scenario runs (default all). */
  users?: string[];
};

/** A threshold in its long form (k6). */
export interface ThresholdObject {
  threshold: string;
  /** Stop the run as soon as this threshold is crossed. */
  abortOnFail?: boolean;
  /** Do not abort before this much of the run has passed. */
  delayAbortEval?: Duration;
}
export type Thresholds = Record<string, Array<string | ThresholdObject> | string>;

export interface ScenarioDefinition<SetupData = any> {
  /** Base URL of relative request paths (`--host` overrides). */
  host?: string;
  users: UserType[];
  load?: LoadOptions;
  /** Several named scenarios in one run, instead of `load` (k6's `scenarios`). */
  scenarios?: Record<string, NamedScenario>;
  thresholds?: Thresholds;
  /** Tags added to every metric sample of the run. */
  tags?: Record<string, string>;
  /** Default request timeout (default '60s'). */
  timeout?: Duration;
  /** Redirects every request follows unless it says otherwise (default 10; 0 turns following off). */
  redirects?: number;
  /** Once before the load, in the main thread; its result is `vu.data` and teardown's argument. */
  setup?: () => SetupData | Promise<SetupData>;
  teardown?: (data: SetupData) => unknown | Promise<unknown>;
}

export const SCENARIO_BRAND: unique symbol = Symbol.for('bulwark.scenario');

/** Declare a load test. The file's default export. */
export function scenario<T>(definition: ScenarioDefinition<T>): ScenarioDefinition<T> {
  Object.defineProperty(definition, SCENARIO_BRAND, { value: true, enumerable: false });
  return definition;
}

export type { HttpClient, HttpResponse };
