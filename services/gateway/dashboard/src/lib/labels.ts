import type { IncidentStatus, IssueKind, QuickActionInfo } from '../api/types';
import { humanize } from './format';

export const KIND_LABELS: Record<IssueKind, string> = {
  cpu: 'CPU',
  memory: 'Memory',
  disk: 'Disk',
  db_latency: 'Database latency',
  network_errors: 'Network errors',
  service_down: 'Service down',
  anomaly: 'Anomaly',
  other: 'Other',
  runaway_process: 'Runaway process',
  low_utilisation: 'Low utilisation',
  host_silent: 'Host silent',
  error_rate: 'Error rate',
  latency: 'Latency',
  no_traffic: 'No traffic',
};

/**
 * What was done about an incident, or how a plan ended, in words that do not flatter:
 * only `verified` says fixed, and every other ending says what it means.
 */
export const STATUS_LABELS: Record<IncidentStatus, string> = {
  not_planned: 'Raised, not planned',
  pending_approval: 'Awaiting approval',
  queued: 'Queued',
  running: 'Running',
  verified: 'Fixed, verified',
  not_fixed: 'Not fixed',
  failed: 'Failed, not fixed',
  refused: 'Refused, not fixed',
  dry_run: 'Dry run, nothing done',
  alerted: 'A person was alerted',
  interrupted: 'Interrupted, not fixed',
  rejected: 'Rejected',
  expired: 'Expired, nobody decided',
};

/** A quick action by what it does: `Quick action: Restart service nginx on vm`. */
export function quickActionTitle(action: QuickActionInfo, host: string): string {
  return `Quick action: ${humanize(action.action)} ${action.target} on ${host}`;
}

/** Who asked for a quick action: `asked by alice via gateway: stuck`; empty if unknown. */
export function askedBy(action: QuickActionInfo): string {
  if (action.requested_by === null) return '';
  const via = action.channel ? ` via ${action.channel}` : '';
  return `asked by ${action.requested_by}${via}${action.reason ? `: ${action.reason}` : ''}`;
}
