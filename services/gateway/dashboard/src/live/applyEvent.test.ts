import { QueryClient } from '@tanstack/react-query';
import { describe, expect, it } from 'vitest';
import { CHART_POINTS, queryKeys, type PerformancePoint } from '../api/queries';
import type { HostMetrics, MetricBatch, MetricSample } from '../api/types';
import { hostMetrics, metricBatch } from '../test/fixtures';
import { applyMetricBatch, staleViews, staleViewsOfBatch } from './applyEvent';

function batch(host: string, at: string, cpu: number, more: MetricSample[] = []): MetricBatch {
  const samples = [
    { name: 'cpu_percent', value: cpu, unit: '%' },
    { name: 'memory_percent', value: 50, unit: '%' },
    ...more,
  ];
  return metricBatch(host, at, samples);
}

describe('applyMetricBatch', () => {
  it("replaces the host's current values and extends its chart", () => {
    const client = new QueryClient();
    client.setQueryData(queryKeys.metrics, [
      hostMetrics('web-2', { cpu: 1 }),
      hostMetrics('web-1', { cpu: 2 }, '2026-01-01T00:00:00Z'),
    ]);
    const points = Array.from({ length: CHART_POINTS }, (_, i) => ({
      at: `2026-01-01T00:00:${String(i).padStart(2, '0')}Z`,
      cpu: i,
      memory: 1,
    }));
    client.setQueryData(queryKeys.performance('web-1'), points);

    applyMetricBatch(client, batch('web-1', '2026-01-01T00:01:00Z', 97));

    const hosts = client.getQueryData<HostMetrics[]>(queryKeys.metrics) ?? [];
    expect(hosts.map((h) => h.host)).toEqual(['web-1', 'web-2']);
    expect(hosts[0]?.series.find((s) => s.name === 'cpu_percent')?.value).toBe(97);
    const chart = client.getQueryData<PerformancePoint[]>(queryKeys.performance('web-1')) ?? [];
    expect(chart).toHaveLength(CHART_POINTS);
    expect(chart.at(-1)).toEqual({ at: '2026-01-01T00:01:00Z', cpu: 97, memory: 50 });
  });

  it('reads a version 1 batch, from a collector not yet upgraded, as well', () => {
    const client = new QueryClient();
    client.setQueryData(queryKeys.metrics, []);
    const samples = [{ name: 'cpu_percent', value: 33, unit: '%' }];
    applyMetricBatch(client, metricBatch('old-1', '2026-01-01T00:01:00Z', samples, 1));
    const [host] = client.getQueryData<HostMetrics[]>(queryKeys.metrics) ?? [];
    expect(host?.series).toEqual([{ name: 'cpu_percent', labels: {}, unit: '%', value: 33 }]);
  });

  it('ignores a batch older than what is shown', () => {
    const client = new QueryClient();
    const current = hostMetrics('web-1', { cpu: 5 }, '2026-01-01T00:05:00Z');
    client.setQueryData(queryKeys.metrics, [current]);
    applyMetricBatch(client, batch('web-1', '2026-01-01T00:04:00Z', 99));
    expect(client.getQueryData(queryKeys.metrics)).toEqual([current]);
  });
});

describe('trace figures in a batch', () => {
  const figures: MetricSample[] = [
    { name: 'span_service_requests_per_second', value: 20, labels: { service: 'checkout' } },
    { name: 'service_edge_requests_per_second', value: 5, labels: { client: 'a', server: 'b' } },
  ];

  it('stay out of the host metrics and make the Monitoring page stale', () => {
    const client = new QueryClient();
    client.setQueryData(queryKeys.metrics, []);
    const withFigures = batch('web-1', '2026-01-01T00:01:00Z', 10, figures);
    applyMetricBatch(client, withFigures);
    const [host] = client.getQueryData<HostMetrics[]>(queryKeys.metrics) ?? [];
    expect(host?.series.map((s) => s.name)).toEqual(['cpu_percent', 'memory_percent']);
    expect(staleViewsOfBatch(withFigures)).toEqual([['monitoring']]);
    expect(staleViewsOfBatch(batch('web-1', '2026-01-01T00:02:00Z', 10))).toEqual([]);
  });

  it('alone add no host to the host metrics', () => {
    const client = new QueryClient();
    client.setQueryData(queryKeys.metrics, []);
    applyMetricBatch(client, metricBatch('shop-1', '2026-01-01T00:01:00Z', figures));
    expect(client.getQueryData(queryKeys.metrics)).toEqual([]);
  });
});

describe('staleViews', () => {
  it('names the views an event changes', () => {
    expect(staleViews('plan.created')).toContainEqual(queryKeys.approvals);
    expect(staleViews('breaker.reset')).toEqual([queryKeys.breakers]);
    expect(staleViews('metric.batch')).toEqual([]);
    expect(staleViews('plan.finished')).toContainEqual(['incidents']);
    expect(staleViews('alert.raised')).toContainEqual(['incident']);
    expect(staleViews('issue.opened')).toContainEqual(['monitoring']);
  });
});
