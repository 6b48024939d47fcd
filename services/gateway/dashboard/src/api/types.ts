/**
 * What the gateway's REST API and WebSocket send and take
 * (medbay.gateway.schemas and medbay.common.events). Timestamps are ISO 8601 strings.
 */

export type Role = 'viewer' | 'operator';
export type Severity = 'warning' | 'critical';
export type Risk = 'low' | 'medium' | 'high';
export type IssueKind =
  | 'cpu'
  | 'memory'
  | 'disk'
  | 'db_latency'
  | 'network_errors'
  | 'service_down'
  | 'anomaly'
  | 'other'
  | 'runaway_process'
  | 'low_utilisation'
  | 'host_silent'
  | 'error_rate'
  | 'latency'
  | 'no_traffic';
export type ActionName =
  | 'restart_service'
  | 'clear_cache'
  | 'scale_up'
  | 'cleanup_disk'
  | 'rotate_logs'
  | 'kill_process'
  | 'optimize_query'
  | 'scale_down'
  | 'reboot'
  | 'alert_human';
/** How a step ended; `interrupted`: its executor stopped during it (not run twice). */
export type StepOutcome = 'success' | 'failure' | 'refused' | 'dry_run' | 'interrupted';
/** Where a plan stands; `finished` only once the executor said how it ended. */
export type PlanStatus = 'pending_approval' | 'rejected' | 'queued' | 'running' | 'finished';
/** How a plan ended (medbay.common.events.PlanOutcome); only `verified` means fixed. */
export type PlanOutcome =
  | 'verified'
  | 'not_fixed'
  | 'failed'
  | 'refused'
  | 'dry_run'
  | 'alerted'
  | 'interrupted'
  | 'rejected'
  | 'expired';
/** What was done about an incident: no plan, a plan not over yet, or how it ended. */
export type IncidentStatus =
  | 'not_planned'
  | 'pending_approval'
  | 'queued'
  | 'running'
  | 'verified'
  | 'not_fixed'
  | 'failed'
  | 'refused'
  | 'dry_run'
  | 'alerted'
  | 'interrupted'
  | 'rejected'
  | 'expired';
export type IncidentState = 'open' | 'resolved' | 'unknown';

export interface Me {
  name: string;
  role: Role;
}

// --- metrics ------------------------------------------------------------------------

export type HistoryPoint = [at: string, value: number];

export interface SeriesValue {
  name: string;
  labels: Record<string, string>;
  unit: string | null;
  value: number;
  history?: HistoryPoint[] | null;
}

export interface HostMetrics {
  host: string;
  collected_at: string;
  series: SeriesValue[];
  dropped_series: number;
}

/** A service the collector checks on a host (its `service_up` series). */
export interface CheckedService {
  host: string;
  service: string;
  up: boolean;
  /** The first report of the current state the gateway holds. */
  since: string;
  checked_at: string;
}

// --- events -------------------------------------------------------------------------

interface EventBase {
  event_id: string;
  schema_version: number;
  timestamp: string;
}

export interface MetricSample {
  name: string;
  value: number;
  unit?: string;
  labels?: Record<string, string>;
}

/** A version 2 batch's samples as columns, one entry per sample in each but `label_sets`
 * (each distinct label set once). Read a batch's samples with `samplesOf`. */
export interface SampleColumns {
  names: string[];
  values: number[];
  /** '' where a sample has no unit. */
  units: string[];
  /** Each sample's labels: a position in `label_sets`. */
  label_index: number[];
  label_sets: Record<string, string>[];
}

export interface MetricBatch extends EventBase {
  type: 'metric.batch';
  host: string;
  collected_at: string;
  /** Columns (schema_version 2) or a list of samples (1, from a collector not yet upgraded). */
  samples: SampleColumns | MetricSample[];
  /** Why each failing service check failed, by service. */
  check_errors: Record<string, string>;
}

interface IssueEventBase extends EventBase {
  fingerprint: string;
  host: string;
  kind: IssueKind;
  resource: string;
  metric: string;
  labels: Record<string, string>;
  value: number;
  threshold: number | null;
  severity: Severity;
  detector: string;
  score: number | null;
  /** What was wrong, in words; may be empty. */
  detail: string;
  /** The affected service's trace figures when the issue was raised or updated. */
  signals: Record<string, number>;
  first_seen: string;
  last_seen: string;
}

export interface IssueOpened extends IssueEventBase {
  type: 'issue.opened';
}

export interface IssueUpdated extends IssueEventBase {
  type: 'issue.updated';
  previous_severity: Severity;
}

export interface IssueResolved extends IssueEventBase {
  type: 'issue.resolved';
}

export interface PlanStep {
  action: ActionName;
  target: string;
  params: Record<string, unknown>;
  risk: Risk;
  estimated_seconds: number;
}

export interface Plan extends EventBase {
  type: 'plan.created';
  plan_id: string;
  issue_fingerprint: string;
  issue_event_id: string;
  host: string;
  issue_kind: IssueKind;
  metric: string;
  labels: Record<string, string>;
  value: number;
  threshold: number | null;
  severity: Severity;
  steps: PlanStep[];
  confidence: number;
  risk: Risk;
  estimated_seconds: number;
  requires_approval: boolean;
  reason: string;
  model_version: string;
  features: Record<string, number>;
}

export interface Approval extends EventBase {
  type: 'plan.approval';
  plan_id: string;
  decision: 'approve' | 'reject';
  decided_by: string;
  channel: 'telegram' | 'gateway' | 'cli' | 'expiry';
  reason: string;
}

export interface ActionResult extends EventBase {
  type: 'action.result';
  plan_id: string;
  issue_fingerprint: string;
  issue_kind: IssueKind;
  step_index: number;
  action: ActionName;
  target: string;
  host: string;
  status: 'started' | 'finished';
  outcome: StepOutcome | null;
  output: string;
  verified: boolean | null;
  dry_run: boolean;
  started_at: string;
  finished_at: string | null;
}

/** How a plan ended, from the executor. */
export interface PlanFinished extends EventBase {
  type: 'plan.finished';
  plan_id: string;
  issue_fingerprint: string;
  issue_kind: IssueKind;
  host: string;
  outcome: PlanOutcome;
  detail: string;
  steps_run: number;
  /** A person was alerted because it was not fixed. */
  escalated: boolean;
  dry_run: boolean;
}

/** A message for people, raised by a plan. */
export interface AlertRaised extends EventBase {
  type: 'alert.raised';
  alert_id: string;
  plan_id: string;
  issue_fingerprint: string;
  issue_kind: IssueKind;
  host: string;
  target: string;
  message: string;
}

export interface ActionRequested extends EventBase {
  type: 'action.requested';
  host: string;
  action: ActionName;
  target: string;
  params: Record<string, unknown>;
  requested_by: string;
  channel: 'gateway' | 'cli' | 'telegram';
  reason: string;
}

export interface BreakerReset extends EventBase {
  type: 'breaker.reset';
  target: string;
  reset_by: string;
  channel: 'gateway' | 'cli' | 'telegram';
}

export type MedbayEvent =
  | MetricBatch
  | IssueOpened
  | IssueUpdated
  | IssueResolved
  | Plan
  | Approval
  | ActionResult
  | PlanFinished
  | AlertRaised
  | ActionRequested
  | BreakerReset;

export type EventType = MedbayEvent['type'];

export const EVENT_TYPES: readonly EventType[] = [
  'metric.batch',
  'issue.opened',
  'issue.updated',
  'issue.resolved',
  'plan.created',
  'plan.approval',
  'action.result',
  'plan.finished',
  'alert.raised',
  'action.requested',
  'breaker.reset',
];

// --- issues, incidents, approvals ------------------------------------------------------

export interface IssueSummary {
  fingerprint: string;
  host: string;
  kind: IssueKind;
  resource: string;
  metric: string;
  labels: Record<string, string>;
  severity: Severity;
  state: 'open' | 'resolved';
  detail: string;
  value: number;
  threshold: number | null;
  detector: string;
  score: number | null;
  first_seen: string;
  last_seen: string;
  resolved_at: string | null;
  updated_at: string;
}

export interface PlanProgress {
  plan: Plan | null;
  plan_id: string;
  status: PlanStatus;
  decision: Approval | null;
  results: ActionResult[];
  /** How it ended; null while it is not over. */
  outcome: PlanOutcome | null;
  finished: PlanFinished | null;
  alerts: AlertRaised[];
}

/** What a quick action's plan does, and who asked for it. */
export interface QuickActionInfo {
  action: ActionName;
  target: string;
  requested_by: string | null;
  channel: string | null;
  reason: string;
}

export interface IncidentSummary {
  fingerprint: string;
  host: string;
  kind: IssueKind;
  severity: Severity | null;
  state: IncidentState;
  resource: string | null;
  /** What was wrong, in words; may be empty. */
  detail: string;
  opened_at: string | null;
  resolved_at: string | null;
  last_activity: string;
  plan_count: number;
  plan_status: PlanStatus | null;
  outcome: PlanOutcome | null;
  status: IncidentStatus;
  pending_approval: boolean;
  /** How often the issue opened again after it was resolved. */
  recurrences: number;
  quick_action: QuickActionInfo | null;
}

export type TimelineEvent =
  IssueOpened | IssueUpdated | IssueResolved | Plan | Approval | ActionResult | PlanFinished | AlertRaised;

export interface TimelineEntry {
  at: string;
  stream: string;
  summary: string;
  event: TimelineEvent;
  /** The W3C trace the event was published in. */
  trace_id?: string | null;
}

/** One occurrence of an incident's issue: opened ... resolved, with its plans. */
export interface Episode {
  /** 1 for the oldest held. */
  number: number;
  state: IncidentState;
  opened_at: string | null;
  resolved_at: string | null;
  plans: PlanProgress[];
  /** Oldest first. */
  timeline: TimelineEntry[];
}

export interface IncidentDetail extends IncidentSummary {
  issue: IssueSummary | null;
  plans: PlanProgress[];
  timeline: TimelineEntry[];
  timeline_dropped: number;
  /** The timeline by episode, newest first. */
  episodes: Episode[];
}

export interface PendingApproval {
  plan: Plan;
  fingerprint: string;
  waiting_since: string;
  /** When the approver rejects it undecided; null: unknown (no approver record). */
  deadline: string | null;
  issue: IssueSummary | null;
  quick_action: QuickActionInfo | null;
}

export interface DecisionResponse {
  approval: Approval;
  note: string;
}

// --- monitoring: what services' traces show ---------------------------------------------

/** Rate, errors and duration over one collector interval; null where not reported. */
interface RedFigures {
  requests_per_second: number | null;
  errors_per_second: number | null;
  /** null also when there were too few requests for a ratio. */
  error_ratio: number | null;
  latency_p50_ms: number | null;
  latency_p95_ms: number | null;
  latency_p99_ms: number | null;
}

export interface RedPoint extends RedFigures {
  at: string;
}

export interface OperationFigures extends RedFigures {
  operation: string;
  last_seen: string;
  /** In the host's latest batch of trace figures. */
  current: boolean;
}

/** One service's RED figures on one host: now, over time (oldest first), per operation. */
export interface ServiceRed {
  host: string;
  service: string;
  last_seen: string;
  /** false: no spans since `last_seen`. */
  current: boolean;
  latest: RedPoint;
  history: RedPoint[];
  /** Busiest first. */
  operations: OperationFigures[];
}

/** Calls from one service to another. */
export interface ServiceEdge {
  host: string;
  client: string;
  server: string;
  requests_per_second: number;
  last_seen: string;
  /** false: fading out, dropped when not seen for a while. */
  current: boolean;
}

export interface TracedHost {
  host: string;
  last_seen: string;
  dropped_operations: number | null;
  dropped_edges: number | null;
}

export interface Monitoring {
  services: ServiceRed[];
  edges: ServiceEdge[];
  hosts: TracedHost[];
  /** Incidents of the trace kinds (error_rate, latency, no_traffic), most recently active first. */
  incidents: IncidentSummary[];
}

/** Where traces are shown; null: no Jaeger UI configured, so no trace links. */
export interface TracingLinks {
  jaeger_url: string | null;
}

/** An event of an incident published in a trace. */
export interface TraceEvent {
  fingerprint: string;
  at: string;
  stream: string;
  summary: string;
  event: TimelineEvent;
}

/** What Medbay holds of one trace. */
export interface TraceFindings {
  trace_id: string;
  /** The trace in Jaeger's UI; null: none configured. */
  jaeger_url: string | null;
  incidents: IncidentSummary[];
  /** Oldest first. */
  events: TraceEvent[];
}

// --- quick actions, breakers, replay ------------------------------------------------------

export interface QuickActionRequest {
  host: string;
  action: ActionName;
  target: string;
  params: Record<string, unknown>;
  reason: string;
}

export interface ActionAccepted {
  request: ActionRequested;
  note: string;
}

export interface Breaker {
  target: string;
  opened_at: string;
  reason: string;
  actions: [action: string, at: string][];
}

export interface BreakerResetResponse {
  reset: BreakerReset;
}

export const STREAMS = [
  'METRICS',
  'ISSUES',
  'PLANS',
  'APPROVALS',
  'RESULTS',
  'REQUESTS',
  'AUDIT',
  'DEADLETTER',
] as const;
export type StreamName = (typeof STREAMS)[number];

export interface ReplayRequest {
  stream: StreamName;
  since: string;
  until: string | null;
  subject: string | null;
  prefix: string;
}

export interface ReplayResponse {
  stream: string;
  since: string;
  until: string;
  prefix: string;
  count: number;
  truncated: boolean;
  requested_by: string;
}

// --- services and the planner ---------------------------------------------------------

export interface ServiceHealth {
  service: string;
  url: string;
  status: 'ok' | 'unhealthy' | 'unreachable';
  http_status: number | null;
  latency_ms: number | null;
  detail: { uptime_seconds?: number; problems?: Record<string, string> } | null;
  /** Facts its /healthz states, e.g. the executor's `mode`: `dry-run` or `live`. */
  info: Record<string, unknown>;
  error: string | null;
}

export interface ActionRate {
  successes: number;
  failures: number;
  rate: number;
}

export interface PlannerModel {
  version: string | null;
  /** What the model learned from: live outcomes or the lab; null without a model. */
  trained_on: 'live' | 'lab' | null;
  validation_accuracy: number | null;
  trained_at: string | null;
  training_outcomes: number | null;
  holdout_outcomes: number | null;
  candidates: Record<string, string[]>;
  success_rates: Record<string, ActionRate>;
  success_rates_by_kind: Record<string, Record<string, ActionRate>>;
}

// --- the lab's report ------------------------------------------------------------------

interface LabCounts {
  injected: number;
  detected: number;
  auto_resolved: number;
  escalated: number;
  /** Injected and never detected. */
  silent: number;
  needless_actions: number;
  outside_policy: number;
  /** null: nothing was resolved. */
  mttr_median_s: number | null;
  mttr_p90_s: number | null;
  /** Ended as expected (auto-resolved, or escalated); null in older reports. */
  as_expected: number | null;
  /** Fixes tried: live steps started on the faults' targets; null in older reports. */
  steps: number | null;
}

export interface LabFault extends LabCounts {
  expected: 'auto_resolved' | 'escalated';
}

export interface LabTotals extends LabCounts {
  /** Faults expected to be auto-resolved, and of those how many were; null in older reports. */
  fixable: number | null;
  fixable_auto_resolved: number | null;
  quiet_issues: number;
  quiet_plans: number;
  quiet_actions: number;
}

export interface LabCorpus {
  file: string;
  outcomes: number;
}

/** The model `medbay lab --train` trained, or why none was. */
export interface LabModel {
  /** The model file (a planner adopts it with `initial_model`); null: none was trained. */
  file: string | null;
  /** null without a file. */
  version: string | null;
  trained_on: 'live' | 'lab' | null;
  validation_accuracy: number | null;
  trained_outcomes: number | null;
  /** Outcomes of the training run: successes and failures. */
  success: number;
  failure: number;
  /** Why no model was trained (no file only). */
  why_none: string | null;
  corpus: LabCorpus;
}

/** The training run of `medbay lab --train`: the faults the model learned from. */
export interface LabTraining {
  seed: number;
  rounds: number;
  planner: string;
  totals: LabTotals;
}

/** One lab run: faults injected into a sandbox, and what Medbay did. */
export interface LabRun {
  schema: 'medbay.lab/1';
  started_at: string;
  finished_at: string;
  /** Empty if unknown. */
  commit: string;
  seed: number;
  rounds: number;
  quiet_seconds: number;
  planner: string;
  lab_trained: boolean;
  totals: LabTotals;
  faults: Record<string, LabFault>;
}

/** What `medbay lab` measured. With `--train`, the trained model's run on held-out faults,
 * with the model, its training, and the rule table's run on the same faults. */
export interface LabReport extends LabRun {
  /** `--train` only, as are `training` and `rule_table`. */
  model: LabModel | null;
  training: LabTraining | null;
  /** null also when no model was trained. */
  rule_table: LabRun | null;
}

/** The lab's latest report, or why there is none to show. */
export interface LabReportState {
  state: 'ok' | 'missing' | 'invalid' | 'unconfigured';
  problem: string | null;
  report: LabReport | null;
}

// --- the WebSocket ---------------------------------------------------------------------

export interface HelloMessage {
  kind: 'hello';
  client: number;
  user: string;
  role: Role;
  queue_size: number;
  types: string[];
  hosts: string[];
}

export interface EventMessage {
  kind: 'event';
  stream: string;
  seq: number;
  type: EventType;
  host: string | null;
  event: MedbayEvent;
}

export interface SubscribedMessage {
  kind: 'subscribed';
  types: string[];
  hosts: string[];
}

export interface ErrorMessage {
  kind: 'error';
  detail: string;
}

export type SocketMessage = HelloMessage | EventMessage | SubscribedMessage | ErrorMessage;
