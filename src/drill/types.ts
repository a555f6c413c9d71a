/** The steps of a game day, in the order they run. */
export const STEP_NAMES = ['backup', 'failover', 'bad-release', 'good-release', 'pitr'] as const;
export type StepName = (typeof STEP_NAMES)[number];

export const STEP_TITLES: Record<StepName, string> = {
  backup: 'full backup under load',
  failover: 'kill -9 of the primary',
  'bad-release': 'bad release (500 on 20 % of requests)',
  'good-release': 'blue-green deploy of a good release',
  pitr: 'orders table dropped by mistake: point-in-time recovery',
};

/** One measured value against its threshold (a Chaos Toolkit probe with its tolerance). */
export interface Probe {
  name: string;
  /** The tolerance, as a reader sees it: "< 5000 ms", "= 0", "true". */
  threshold: string;
  value: number | boolean | null;
  unit?: string;
  met: boolean;
  /** Why, when the value alone does not say it. */
  detail?: string;
}

/** A steady-state check (Chaos Toolkit: steady_state_met and its probes). */
export interface SteadyState {
  steady_state_met: boolean;
  probes: Probe[];
}

export interface StepResult {
  step: StepName;
  /** 1-based position in this drill. */
  index: number;
  title: string;
  /** The hypothesis in one sentence. */
  hypothesis: string;
  start: string;
  end: string;
  /** Seconds. */
  duration: number;
  status: 'succeeded' | 'failed';
  /** True when a threshold of the hypothesis or a steady state was not met. */
  deviated: boolean;
  before: SteadyState;
  after: SteadyState;
  /** The hypothesis' thresholds and what was measured against them. */
  probes: Probe[];
  /** Everything measured in this step (RTO, RPO, failed requests, times...). */
  measured: Record<string, number | string | boolean | null>;
  /** Traffic seen by the load while the step ran. */
  traffic: { requests: number; failures: number };
  /** Seconds since the load started when the step's action began: the fault, or the backup (chart marker). */
  faultAt?: number;
  /** One line per thing the step did or saw. */
  log: string[];
  /** Set when the step could not run to its end. */
  error?: string;
}

/** One second of traffic through the router, as the drill's charts show it. */
export interface TimelinePoint {
  /** Seconds since the load started. */
  t: number;
  rps: number;
  errors: number;
  p50: number;
  p95: number;
  p99: number;
}

/** What a running drill reports, for the live view. */
export type DrillEvent =
  | { type: 'setup'; line: string }
  | { type: 'step-start'; step: StepName; index: number; total: number; title: string; hypothesis: string }
  | { type: 'step-log'; step: StepName; line: string }
  | { type: 'step-end'; result: StepResult }
  | { type: 'traffic'; elapsedS: number; rps: number; errors: number; p99: number; orders: number }
  | { type: 'cleanup'; line: string };
