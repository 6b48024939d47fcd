import type { RedPoint } from '../../api/types';
import { formatMs, formatPerSecond } from '../../lib/traces';

/** What a RED chart draws: request and error rates, or latency percentiles. */
export type RedChartKind = 'rates' | 'latency';

export interface RedLine {
  label: string;
  values: (number | null)[];
  /** Which of the theme's colours: the first line in the primary one. */
  tone: 'primary' | 'secondary' | 'error';
  dashed: boolean;
}

/** The lines of a service's RED chart, over its history (oldest first). */
export function redLines(kind: RedChartKind, history: RedPoint[]): RedLine[] {
  const values = (pick: (p: RedPoint) => number | null) => history.map(pick);
  if (kind === 'rates') {
    return [
      { label: 'Requests/s', values: values((p) => p.requests_per_second), tone: 'primary', dashed: false },
      { label: 'Errors/s', values: values((p) => p.errors_per_second), tone: 'error', dashed: true },
    ];
  }
  return [
    { label: 'p50 ms', values: values((p) => p.latency_p50_ms), tone: 'primary', dashed: false },
    { label: 'p95 ms', values: values((p) => p.latency_p95_ms), tone: 'secondary', dashed: true },
    { label: 'p99 ms', values: values((p) => p.latency_p99_ms), tone: 'error', dashed: true },
  ];
}

/** The chart in words, for screen readers: what it shows and its latest figures. */
export function describeRed(kind: RedChartKind, service: string, history: RedPoint[]): string {
  const last = history.at(-1);
  const what =
    kind === 'rates'
      ? `Requests and errors per second of ${service}`
      : `Latency p50, p95 and p99 of ${service}`;
  if (last === undefined) return `${what}: no figures yet`;
  const latest =
    kind === 'rates'
      ? `${formatPerSecond(last.requests_per_second)} requests, ${formatPerSecond(last.errors_per_second)} errors`
      : `p50 ${formatMs(last.latency_p50_ms)}, p95 ${formatMs(last.latency_p95_ms)}, p99 ${formatMs(last.latency_p99_ms)}`;
  return `${what} over the last ${history.length} readings; latest: ${latest}`;
}
