/**
 * What the gateway's REST API and WebSocket send and take
 * (medbay.gateway.schemas and medbay.common.events). Timestamps are ISO 8601 strings.
 */

export type Role = 'viewer' | 'operator';
export type Severity = 'warning' | 'critical';
export type Risk = 'low' | 'medium' | 'high';
export type IssueKind =
  'cpu' | 'memory' | 'disk' | 'db_latency' | 'network_errors' | 'service_down' | 'anomaly' | 'other';
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
export type StepOutcome = 'success' | 'failure' | 'refused' | 'dry_run';
export type PlanStatus = 'pending_approval' | 'rejected' | 'queued' | 'running' | 'finished';
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

export interface MetricBatch extends EventBase {
  type: 'metric.batch';
  host: string;
  collected_at: string;
  samples: MetricSample[];
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
  outcome: StepOutcome | null;
  verified: boolean | null;
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
  opened_at: string | null;
  resolved_at: string | null;
  last_activity: string;
  plan_count: number;
  plan_status: PlanStatus | null;
  pending_approval: boolean;
  /** How often the issue opened again after it was resolved. */
  recurrences: number;
  quick_action: QuickActionInfo | null;
}

export type TimelineEvent = IssueOpened | IssueUpdated | IssueResolved | Plan | Approval | ActionResult;

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
  validation_accuracy: number | null;
  trained_at: string | null;
  training_outcomes: number | null;
  holdout_outcomes: number | null;
  candidates: Record<string, string[]>;
  success_rates: Record<string, ActionRate>;
  success_rates_by_kind: Record<string, Record<string, ActionRate>>;
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
