import type { IssueKind, QuickActionInfo } from '../api/types';
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
