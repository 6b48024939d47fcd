import type {
  ActionResult,
  AlertRaised,
  Approval,
  HostMetrics,
  IncidentDetail,
  IncidentSummary,
  IssueKind,
  IssueOpened,
  MetricBatch,
  MetricSample,
  PendingApproval,
  Plan,
  PlanFinished,
  PlanOutcome,
  PlanProgress,
  RedPoint,
  SampleColumns,
  ServiceEdge,
  ServiceRed,
  TimelineEntry,
} from '../api/types';

export const NOW = '2026-01-10T12:00:00Z';
export const TRACE_ID = '4bf92f3577b34da6a3ce929d0e0e4736';

export function hostMetrics(
  host: string,
  values: { cpu?: number; memory?: number; disk?: number },
  at = NOW,
): HostMetrics {
  const series = [];
  if (values.cpu !== undefined)
    series.push({ name: 'cpu_percent', labels: {}, unit: '%', value: values.cpu });
  if (values.memory !== undefined)
    series.push({ name: 'memory_percent', labels: {}, unit: '%', value: values.memory });
  if (values.disk !== undefined) {
    series.push({ name: 'disk_percent', labels: { mount: '/' }, unit: '%', value: values.disk });
  }
  series.push(
    { name: 'net_recv_bytes_per_second', labels: { interface: 'eth0' }, unit: 'bytes/s', value: 1500 },
    { name: 'net_sent_bytes_per_second', labels: { interface: 'eth0' }, unit: 'bytes/s', value: 500 },
    { name: 'net_recv_bytes_per_second', labels: { interface: 'lo' }, unit: 'bytes/s', value: 99_999 },
  );
  return { host, collected_at: at, series, dropped_series: 0 };
}

export function plan(overrides: Partial<Plan> = {}): Plan {
  return {
    event_id: 'p1',
    schema_version: 1,
    timestamp: NOW,
    type: 'plan.created',
    plan_id: 'a7de28abc05d5a0c88393a2d6e962da1',
    issue_fingerprint: 'f1',
    issue_event_id: 'i1',
    host: 'web-1',
    issue_kind: 'service_down',
    metric: 'service_up',
    labels: {},
    value: 0,
    threshold: 0.5,
    severity: 'critical',
    steps: [
      { action: 'restart_service', target: 'demo-web', params: {}, risk: 'low', estimated_seconds: 30 },
    ],
    confidence: 0.42,
    risk: 'low',
    estimated_seconds: 30,
    requires_approval: true,
    reason: 'rules-v1: service down: restart it; needs approval: confidence 0.42 under 0.50',
    model_version: 'rules-v1',
    features: {},
    ...overrides,
  };
}

export function pendingApproval(
  overrides: Partial<Plan> = {},
  more: Partial<PendingApproval> = {},
): PendingApproval {
  return {
    plan: plan(overrides),
    fingerprint: 'f1',
    waiting_since: NOW,
    deadline: null,
    issue: null,
    quick_action: null,
    ...more,
  };
}

export function approval(planId: string): Approval {
  return {
    event_id: 'a1',
    schema_version: 1,
    timestamp: NOW,
    type: 'plan.approval',
    plan_id: planId,
    decision: 'approve',
    decided_by: 'alice',
    channel: 'gateway',
    reason: 'looks right',
  };
}

export function result(planId: string, overrides: Partial<ActionResult> = {}): ActionResult {
  return {
    event_id: 'r1',
    schema_version: 1,
    timestamp: NOW,
    type: 'action.result',
    plan_id: planId,
    issue_fingerprint: 'f1',
    issue_kind: 'service_down',
    step_index: 0,
    action: 'restart_service',
    target: 'demo-web',
    host: 'web-1',
    status: 'finished',
    outcome: 'success',
    output: 'restarted',
    verified: true,
    dry_run: false,
    started_at: NOW,
    finished_at: NOW,
    ...overrides,
  };
}

export function finished(
  planId: string,
  outcome: PlanOutcome = 'verified',
  overrides: Partial<PlanFinished> = {},
): PlanFinished {
  return {
    event_id: 'e1',
    schema_version: 1,
    timestamp: NOW,
    type: 'plan.finished',
    plan_id: planId,
    issue_fingerprint: 'f1',
    issue_kind: 'service_down',
    host: 'web-1',
    outcome,
    detail: '',
    steps_run: 1,
    escalated: false,
    dry_run: false,
    ...overrides,
  };
}

export function alert(planId: string): AlertRaised {
  return {
    event_id: 'al1',
    schema_version: 1,
    timestamp: NOW,
    type: 'alert.raised',
    alert_id: 'al1',
    plan_id: planId,
    issue_fingerprint: 'f1',
    issue_kind: 'service_down',
    host: 'web-1',
    target: 'oncall',
    message: 'demo-web on web-1 is still down',
  };
}

/** A resolved incident whose plan ended as `ending` says (verified by default). */
export function incidentDetail(ending: PlanFinished = finished(plan().plan_id)): IncidentDetail {
  const p = plan();
  const progress: PlanProgress = {
    plan: p,
    plan_id: p.plan_id,
    status: 'finished',
    decision: approval(p.plan_id),
    results: [result(p.plan_id)],
    outcome: ending.outcome,
    finished: ending,
    alerts: [],
  };
  const timeline: TimelineEntry[] = [
    { at: NOW, stream: 'PLANS', summary: 'plan', event: p, trace_id: TRACE_ID },
    { at: NOW, stream: 'APPROVALS', summary: 'approved', event: approval(p.plan_id) },
    { at: NOW, stream: 'RESULTS', summary: 'result', event: result(p.plan_id) },
    { at: NOW, stream: 'RESULTS', summary: 'ended', event: ending },
  ];
  return {
    fingerprint: 'f1',
    host: 'web-1',
    kind: 'service_down',
    severity: 'critical',
    state: 'resolved',
    resource: 'demo-web',
    detail: 'connection refused',
    opened_at: NOW,
    resolved_at: NOW,
    last_activity: NOW,
    plan_count: 1,
    plan_status: 'finished',
    outcome: ending.outcome,
    status: ending.outcome,
    pending_approval: false,
    recurrences: 0,
    quick_action: null,
    issue: null,
    plans: [progress],
    timeline,
    timeline_dropped: 0,
    episodes: [
      { number: 1, state: 'resolved', opened_at: NOW, resolved_at: NOW, plans: [progress], timeline },
    ],
  };
}

/** A RED point `seconds` after NOW. */
export function redPoint(seconds: number, requests: number, errors: number, p95: number): RedPoint {
  return {
    at: new Date(Date.parse(NOW) + seconds * 1000).toISOString(),
    requests_per_second: requests,
    errors_per_second: errors,
    error_ratio: requests >= 5 ? errors / requests : null,
    latency_p50_ms: p95 / 4,
    latency_p95_ms: p95,
    latency_p99_ms: p95 * 2,
  };
}

/** A service's figures on web-1 over three readings, the last `requests` and `errors`. */
export function serviceRed(service: string, requests: number, errors: number, p95: number): ServiceRed {
  const history = [0, 10, 20].map((s) => redPoint(s, requests, errors, p95));
  const latest = history[2] as RedPoint;
  return {
    host: 'web-1',
    service,
    last_seen: latest.at,
    current: true,
    latest,
    history,
    operations: [
      {
        operation: `POST /${service}`,
        requests_per_second: requests,
        errors_per_second: errors,
        error_ratio: null,
        latency_p50_ms: null,
        latency_p95_ms: p95,
        latency_p99_ms: null,
        last_seen: latest.at,
        current: true,
      },
    ],
  };
}

export function serviceEdge(client: string, server: string, rps: number, current = true): ServiceEdge {
  return { host: 'web-1', client, server, requests_per_second: rps, last_seen: NOW, current };
}

/** An incident the detector raised from a service's traces. */
export function traceIncident(kind: IssueKind, service: string): IncidentSummary {
  return {
    fingerprint: `${kind}-${service}`,
    host: 'web-1',
    kind,
    severity: 'critical',
    state: 'open',
    resource: service,
    detail: '',
    opened_at: NOW,
    resolved_at: null,
    last_activity: NOW,
    plan_count: 0,
    plan_status: null,
    outcome: null,
    status: 'not_planned',
    pending_approval: false,
    recurrences: 0,
    quick_action: null,
  };
}

/** The issue the incident fixtures are about: demo-web down on web-1. */
export function issueOpened(overrides: Partial<IssueOpened> = {}): IssueOpened {
  return {
    event_id: 'i1',
    schema_version: 1,
    timestamp: NOW,
    type: 'issue.opened',
    fingerprint: 'f1',
    host: 'web-1',
    kind: 'service_down',
    resource: 'demo-web',
    metric: 'service_up',
    labels: { service: 'demo-web' },
    value: 0,
    threshold: 0.5,
    severity: 'critical',
    detector: 'threshold',
    score: null,
    detail: 'connection refused',
    signals: {},
    first_seen: NOW,
    last_seen: NOW,
    ...overrides,
  };
}

/** Samples as the columns of a version 2 batch, each distinct label set once. */
export function sampleColumns(samples: MetricSample[]): SampleColumns {
  const seen: string[] = [];
  const labelSets: Record<string, string>[] = [];
  const labelIndex = samples.map((sample) => {
    const labels = sample.labels ?? {};
    const key = JSON.stringify(Object.entries(labels).sort());
    let index = seen.indexOf(key);
    if (index < 0) {
      index = seen.push(key) - 1;
      labelSets.push(labels);
    }
    return index;
  });
  return {
    names: samples.map((sample) => sample.name),
    values: samples.map((sample) => sample.value),
    units: samples.map((sample) => sample.unit ?? ''),
    label_index: labelIndex,
    label_sets: labelSets,
  };
}

/** A metric batch as the collector writes it (version 2), or as before (version 1). */
export function metricBatch(
  host: string,
  at: string,
  samples: MetricSample[],
  version: 1 | 2 = 2,
): MetricBatch {
  return {
    event_id: `${host}-${at}`,
    schema_version: version,
    timestamp: at,
    type: 'metric.batch',
    host,
    collected_at: at,
    samples: version === 2 ? sampleColumns(samples) : samples,
    check_errors: {},
  };
}
