import type { QueryClient, QueryKey } from '@tanstack/react-query';
import { CHART_POINTS, queryKeys, type PerformancePoint } from '../api/queries';
import type { EventType, HostMetrics, MetricBatch } from '../api/types';
import { samplesOf } from '../lib/samples';
import { isTraceFigure } from '../lib/traces';

/** The views each kind of event changes (query key prefixes). */
const STALE_VIEWS: Record<Exclude<EventType, 'metric.batch'>, QueryKey[]> = {
  'issue.opened': [['incidents'], ['incident'], ['monitoring']],
  'issue.updated': [['incidents'], ['incident'], ['monitoring']],
  'issue.resolved': [['incidents'], ['incident'], ['monitoring']],
  'plan.created': [['incidents'], ['incident'], queryKeys.approvals],
  'plan.approval': [['incidents'], ['incident'], queryKeys.approvals],
  'action.result': [['incidents'], ['incident'], queryKeys.approvals, queryKeys.model, queryKeys.breakers],
  'plan.finished': [['incidents'], ['incident'], queryKeys.approvals, queryKeys.model],
  'alert.raised': [['incidents'], ['incident']],
  'action.requested': [],
  'breaker.reset': [queryKeys.breakers],
};

export function staleViews(type: EventType): QueryKey[] {
  return type === 'metric.batch' ? [] : STALE_VIEWS[type];
}

/** The views a metric batch makes stale: the Monitoring page's, if it carries trace figures
 * (the others it updates in place: `applyMetricBatch`). */
export function staleViewsOfBatch(batch: MetricBatch): QueryKey[] {
  return samplesOf(batch).some(isTraceFigure) ? [['monitoring']] : [];
}

/** Timestamps compared as times: their text may differ in the digits of a second. */
function isLater(at: string, than: string): boolean {
  return Date.parse(at) > Date.parse(than);
}

/** Put a host's new readings straight into the cached metric views; its trace figures
 * are not host metrics (the gateway keeps them for the Monitoring page). */
export function applyMetricBatch(client: QueryClient, batch: MetricBatch): void {
  const all = samplesOf(batch);
  const samples = all.filter((sample) => !isTraceFigure(sample));
  if (samples.length === 0 && all.length > 0) return;
  const current: HostMetrics = {
    host: batch.host,
    collected_at: batch.collected_at,
    series: samples.map((sample) => ({
      name: sample.name,
      labels: sample.labels ?? {},
      unit: sample.unit ?? null,
      value: sample.value,
    })),
    dropped_series: 0,
  };
  client.setQueryData<HostMetrics[]>(queryKeys.metrics, (hosts) => {
    if (hosts === undefined) return undefined;
    const known = hosts.find((h) => h.host === batch.host);
    if (known !== undefined && !isLater(batch.collected_at, known.collected_at)) return hosts;
    const others = hosts.filter((h) => h.host !== batch.host);
    return [...others, current].sort((a, b) => a.host.localeCompare(b.host));
  });
  const valueOf = (name: string) => all.find((s) => s.name === name)?.value ?? null;
  const point: PerformancePoint = {
    at: batch.collected_at,
    cpu: valueOf('cpu_percent'),
    memory: valueOf('memory_percent'),
  };
  client.setQueryData<PerformancePoint[]>(queryKeys.performance(batch.host), (points) => {
    if (points === undefined) return undefined;
    const last = points.at(-1);
    if (last !== undefined && !isLater(point.at, last.at)) return points;
    return [...points, point].slice(-CHART_POINTS);
  });
}
