/**
 * Where Jaeger shows a plan's trace. The executor's `executor.run_plan` span
 * carries the attribute `medbay.plan_id`, and its trace runs from the metric
 * through the issue and the plan to the fix: a search by that tag finds it.
 */
export function planTraceUrl(jaegerUrl: string, planId: string): string {
  const base = jaegerUrl.endsWith('/') ? jaegerUrl : `${jaegerUrl}/`;
  const url = new URL('search', base);
  url.searchParams.set('service', 'executor');
  url.searchParams.set('tags', JSON.stringify({ 'medbay.plan_id': planId }));
  return url.toString();
}
