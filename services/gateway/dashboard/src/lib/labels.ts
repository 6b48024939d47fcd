import type { IssueKind } from '../api/types';

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
