/**
 * Where Jaeger shows a trace. A plan's trace runs from the metric sample that
 * revealed the problem through the issue and the plan to the executor's steps.
 * Links go there only when the gateway names a Jaeger UI (`jaeger_url` in its
 * config): without one there is no link, never one to a UI that is not there.
 */
export function traceUrl(jaegerUrl: string, traceId: string): string {
  const base = jaegerUrl.endsWith('/') ? jaegerUrl : `${jaegerUrl}/`;
  return new URL(`trace/${encodeURIComponent(traceId)}`, base).toString();
}

const TRACE_ID = /^[0-9a-f]{32}$/;

/** A W3C trace id as typed (spaces and case aside), or why it is not one. */
export function parseTraceId(text: string): { traceId: string } | { problem: string } {
  const traceId = text.trim().toLowerCase();
  if (!TRACE_ID.test(traceId)) return { problem: 'A trace id is 32 hexadecimal digits (0-9, a-f).' };
  if (/^0+$/.test(traceId)) return { problem: 'All zeros is not a trace id.' };
  return { traceId };
}
