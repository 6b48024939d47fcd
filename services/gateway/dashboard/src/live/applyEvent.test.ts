import { QueryClient } from '@tanstack/react-query';
import { describe, expect, it } from 'vitest';
import { CHART_POINTS, queryKeys, type PerformancePoint } from '../api/queries';
import type { HostMetrics, MetricBatch } from '../api/types';
import { hostMetrics } from '../test/fixtures';
import { applyMetricBatch, staleViews } from './applyEvent';

function batch(host: string, at: string, cpu: number): MetricBatch {
  return {
    event_id: at,
    schema_version: 1,
    timestamp: at,
    type: 'metric.batch',
    host,
    collected_at: at,
    samples: [
      { name: 'cpu_percent', value: cpu, unit: '%' },
      { name: 'memory_percent', value: 50, unit: '%' },
    ],
    check_errors: {},
  };
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

  it('ignores a batch older than what is shown', () => {
    const client = new QueryClient();
    const current = hostMetrics('web-1', { cpu: 5 }, '2026-01-01T00:05:00Z');
    client.setQueryData(queryKeys.metrics, [current]);
    applyMetricBatch(client, batch('web-1', '2026-01-01T00:04:00Z', 99));
    expect(client.getQueryData(queryKeys.metrics)).toEqual([current]);
  });
});

describe('staleViews', () => {
  it('names the views an event changes', () => {
    expect(staleViews('plan.created')).toContainEqual(queryKeys.approvals);
    expect(staleViews('breaker.reset')).toEqual([queryKeys.breakers]);
    expect(staleViews('metric.batch')).toEqual([]);
    expect(staleViews('plan.finished')).toContainEqual(['incidents']);
    expect(staleViews('alert.raised')).toContainEqual(['incident']);
  });
});
