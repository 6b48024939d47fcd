import type { MetricSample } from '../api/types';

const RED = [
  'requests_per_second',
  'errors_per_second',
  'error_ratio',
  'latency_p50_ms',
  'latency_p95_ms',
  'latency_p99_ms',
] as const;

/**
 * The collector's trace figures in a metric batch (medbay.gateway.monitoring.TRACE_SAMPLES):
 * per service and per operation, the calls between services and what it dropped over
 * its limits. The gateway keeps them apart from the host metrics, for the Monitoring page.
 */
const TRACE_SAMPLES = new Set<string>([
  ...RED.map((name) => `span_service_${name}`),
  ...RED.map((name) => `span_${name}`),
  'service_edge_requests_per_second',
  'spans_dropped_operations',
  'spans_dropped_edges',
]);

export function isTraceFigure(sample: MetricSample): boolean {
  return TRACE_SAMPLES.has(sample.name);
}

/** `0/s`, `0.05/s`, `2.5/s`, `22/s`, `1.2k/s`. */
export function formatPerSecond(value: number | null): string {
  if (value === null) return '–';
  if (value === 0) return '0/s';
  if (value >= 1000) return `${(value / 1000).toFixed(1)}k/s`;
  if (value >= 10) return `${value.toFixed(0)}/s`;
  if (value >= 0.1) return `${value.toFixed(1)}/s`;
  return `${value.toFixed(2)}/s`;
}

/** `250 ms`, `12.5 ms`, `2.4 s`. */
export function formatMs(value: number | null): string {
  if (value === null) return '–';
  if (value >= 1000) return `${(value / 1000).toFixed(1)} s`;
  return `${value.toFixed(value < 100 ? 1 : 0)} ms`;
}

/** An error ratio as a percentage: `12.5 %`. */
export function formatRatio(value: number | null): string {
  return value === null ? '–' : `${(value * 100).toFixed(1)} %`;
}
