import { describe, expect, it } from 'vitest';
import { parseTraceId, traceUrl } from '../../lib/jaeger';
import { formatMs, formatPerSecond, formatRatio, isTraceFigure } from '../../lib/traces';
import { redPoint, serviceEdge } from '../../test/fixtures';
import { layoutMap, mergeEdges } from './mapLayout';
import { describeRed, redLines } from './redSeries';

describe('the dependency map', () => {
  it('merges the same call seen on several hosts, busiest first', () => {
    const merged = mergeEdges([
      serviceEdge('a', 'b', 1),
      { ...serviceEdge('a', 'b', 2, false), host: 'web-2' },
      serviceEdge('b', 'c', 5, false),
    ]);
    expect(merged.map((e) => [e.client, e.server, e.requestsPerSecond, e.current])).toEqual([
      ['b', 'c', 5, false],
      ['a', 'b', 3, true],
    ]);
  });

  it('lays services out left to right as calls go, a cycle included', () => {
    const edges = mergeEdges([
      serviceEdge('frontend', 'checkout', 10),
      serviceEdge('checkout', 'payments', 4),
      serviceEdge('frontend', 'payments', 1),
      serviceEdge('payments', 'checkout', 1), // a cycle
      serviceEdge('cron', 'cron', 1), // calls itself
    ]);
    const layout = layoutMap(['frontend', 'lonely'], edges);
    const columns = Object.fromEntries(layout.nodes.map((n) => [n.service, n.column]));
    expect(columns.frontend).toBe(0);
    expect(columns.lonely).toBe(0);
    expect(columns.cron).toBe(0);
    expect(columns.checkout).toBeGreaterThan(columns.frontend ?? 0);
    expect(columns.payments).toBeLessThan(layout.nodes.length); // the cycle stopped growing
    expect(layout.edges).toHaveLength(5);
    for (const node of layout.nodes) {
      expect(node.x + 150).toBeLessThanOrEqual(layout.width);
      expect(node.y + 36).toBeLessThanOrEqual(layout.height);
    }
    const sameColumn = new Set(layout.nodes.map((n) => `${n.column}:${n.row}`));
    expect(sameColumn.size).toBe(layout.nodes.length); // no two services on one spot
  });
});

describe('RED figures', () => {
  const history = [redPoint(0, 10, 1, 200), redPoint(10, 20, 2, 300)];

  it('draws rates and latency percentiles from the history', () => {
    expect(redLines('rates', history).map((l) => [l.label, l.values])).toEqual([
      ['Requests/s', [10, 20]],
      ['Errors/s', [1, 2]],
    ]);
    expect(redLines('latency', history).map((l) => l.values)).toEqual([
      [50, 75],
      [200, 300],
      [400, 600],
    ]);
  });

  it('says what a chart shows in words', () => {
    expect(describeRed('rates', 'checkout', history)).toBe(
      'Requests and errors per second of checkout over the last 2 readings; latest: 20/s requests, 2.0/s errors',
    );
    expect(describeRed('latency', 'checkout', [])).toBe(
      'Latency p50, p95 and p99 of checkout: no figures yet',
    );
  });

  it('writes rates, durations and ratios briefly', () => {
    const rates = [1234, 22, 0.5, 0.02, 0].map(formatPerSecond);
    expect(rates).toEqual(['1.2k/s', '22/s', '0.5/s', '0.02/s', '0/s']);
    expect([formatMs(2500), formatMs(120), formatMs(12.34), formatMs(null)]).toEqual([
      '2.5 s',
      '120 ms',
      '12.3 ms',
      '–',
    ]);
    expect(formatRatio(0.125)).toBe('12.5 %');
  });

  it('tells trace figures from host metrics', () => {
    expect(isTraceFigure({ name: 'span_service_latency_p95_ms', value: 1 })).toBe(true);
    expect(isTraceFigure({ name: 'service_edge_requests_per_second', value: 1 })).toBe(true);
    expect(isTraceFigure({ name: 'spans_dropped_edges', value: 0 })).toBe(true);
    expect(isTraceFigure({ name: 'cpu_percent', value: 1 })).toBe(false);
    expect(isTraceFigure({ name: 'service_up', value: 1 })).toBe(false);
  });
});

describe('trace ids', () => {
  it('takes 32 hexadecimal digits, not all zero, in any case', () => {
    expect(parseTraceId(' 4BF92F3577B34DA6A3CE929D0E0E4736 ')).toEqual({
      traceId: '4bf92f3577b34da6a3ce929d0e0e4736',
    });
    expect(parseTraceId('4bf92f35')).toHaveProperty('problem');
    expect(parseTraceId('g'.repeat(32))).toHaveProperty('problem');
    expect(parseTraceId('0'.repeat(32))).toEqual({ problem: 'All zeros is not a trace id.' });
    expect(traceUrl('http://jaeger:16686', 'abc')).toBe('http://jaeger:16686/trace/abc');
  });
});
