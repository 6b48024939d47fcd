/**
 * Where Jaeger shows a trace. A plan's trace runs from the metric sample that
 * revealed the problem through the issue and the plan to the executor's steps.
 */
export function traceUrl(jaegerUrl: string, traceId: string): string {
  const base = jaegerUrl.endsWith('/') ? jaegerUrl : `${jaegerUrl}/`;
  return new URL(`trace/${encodeURIComponent(traceId)}`, base).toString();
}
