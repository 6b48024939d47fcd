import { useQuery } from '@tanstack/react-query';
import { useLive } from '../state/live';
import { apiRequest, query } from './client';
import type {
  Breaker,
  CheckedService,
  EventMessage,
  HostMetrics,
  IncidentDetail,
  IncidentSummary,
  LabReportState,
  Monitoring,
  PendingApproval,
  PlannerModel,
  ServiceHealth,
  TraceFindings,
  TracingLinks,
} from './types';

/** How often event-driven views poll while the WebSocket is down. */
export const POLL_MS = 5000;
/** Views no event announces (service health, breakers, the model, the lab) poll all the time. */
const SLOW_POLL_MS = 15_000;
/** Points in the performance chart. */
export const CHART_POINTS = 20;

export const queryKeys = {
  metrics: ['metrics'] as const,
  performance: (host: string) => ['performance', host] as const,
  incidents: (state: IncidentFilter) => ['incidents', state] as const,
  incident: (fingerprint: string) => ['incident', fingerprint] as const,
  approvals: ['approvals'] as const,
  services: ['services'] as const,
  checkedServices: ['checked-services'] as const,
  recentEvents: ['recent-events'] as const,
  model: ['model'] as const,
  lab: ['lab'] as const,
  breakers: ['breakers'] as const,
  monitoring: (host: string | null) => ['monitoring', host] as const,
  tracing: ['tracing'] as const,
  trace: (traceId: string) => ['trace', traceId] as const,
};

/** False while live events keep the view current; the polling interval otherwise. */
function usePolling(): number | false {
  return useLive((state) => (state.status === 'live' ? false : POLL_MS));
}

export function useHostMetrics() {
  return useQuery({
    queryKey: queryKeys.metrics,
    queryFn: () => apiRequest<HostMetrics[]>('api/metrics'),
    refetchInterval: usePolling(),
  });
}

export interface PerformancePoint {
  at: string;
  cpu: number | null;
  memory: number | null;
}

async function fetchPerformance(host: string): Promise<PerformancePoint[]> {
  const path = (name: string) => `api/metrics/${encodeURIComponent(host)}${query({ name })}`;
  const [cpu, memory] = await Promise.all([
    apiRequest<HostMetrics>(path('cpu_percent')),
    apiRequest<HostMetrics>(path('memory_percent')),
  ]);
  const points = new Map<string, PerformancePoint>();
  const add = (metrics: HostMetrics, field: 'cpu' | 'memory') => {
    for (const [at, value] of metrics.series[0]?.history ?? []) {
      const point = points.get(at) ?? { at, cpu: null, memory: null };
      point[field] = value;
      points.set(at, point);
    }
  };
  add(cpu, 'cpu');
  add(memory, 'memory');
  return [...points.values()].sort((a, b) => Date.parse(a.at) - Date.parse(b.at)).slice(-CHART_POINTS);
}

export function usePerformance(host: string | null) {
  return useQuery({
    queryKey: queryKeys.performance(host ?? ''),
    queryFn: () => fetchPerformance(host ?? ''),
    enabled: host !== null,
    refetchInterval: usePolling(),
  });
}

export type IncidentFilter = 'open' | 'all';

export function useIncidents(state: IncidentFilter) {
  return useQuery({
    queryKey: queryKeys.incidents(state),
    queryFn: () =>
      apiRequest<IncidentSummary[]>(
        `api/incidents${query({ state: state === 'open' ? 'open' : undefined, limit: 200 })}`,
      ),
    refetchInterval: usePolling(),
  });
}

export function useIncident(fingerprint: string) {
  return useQuery({
    queryKey: queryKeys.incident(fingerprint),
    queryFn: () => apiRequest<IncidentDetail>(`api/incidents/${encodeURIComponent(fingerprint)}`),
    refetchInterval: usePolling(),
  });
}

export function usePendingApprovals() {
  return useQuery({
    queryKey: queryKeys.approvals,
    queryFn: () => apiRequest<PendingApproval[]>('api/approvals'),
    refetchInterval: usePolling(),
  });
}

export function useServices() {
  return useQuery({
    queryKey: queryKeys.services,
    queryFn: () => apiRequest<ServiceHealth[]>('api/services'),
    refetchInterval: SLOW_POLL_MS,
  });
}

/** The services the collector checks on each host: up or down, since when. */
export function useCheckedServices() {
  return useQuery({
    queryKey: queryKeys.checkedServices,
    queryFn: () => apiRequest<CheckedService[]>('api/checked-services'),
    refetchInterval: SLOW_POLL_MS,
  });
}

/** The executor's mode, as its /healthz states it: `dry-run`, `live`, or null while unknown. */
export function useExecutorMode(): string | null {
  const services = useServices();
  const mode = services.data?.find((s) => s.service === 'executor')?.info.mode;
  return typeof mode === 'string' ? mode : null;
}

/** How many recent events a page loads before following live ones. */
export const RECENT_EVENTS = 500;

/** The latest events the gateway read, newest last; loaded once per visit. */
export function useRecentEvents() {
  return useQuery({
    queryKey: queryKeys.recentEvents,
    queryFn: () => apiRequest<EventMessage[]>(`api/events${query({ limit: RECENT_EVENTS })}`),
    staleTime: 0,
    gcTime: 0,
  });
}

export function usePlannerModel() {
  return useQuery({
    queryKey: queryKeys.model,
    queryFn: () => apiRequest<PlannerModel>('api/model'),
    refetchInterval: SLOW_POLL_MS,
  });
}

/** The lab's latest report (`medbay lab`), or why there is none. */
export function useLabReport() {
  return useQuery({
    queryKey: queryKeys.lab,
    queryFn: () => apiRequest<LabReportState>('api/lab'),
    refetchInterval: SLOW_POLL_MS,
  });
}

export function useBreakers() {
  return useQuery({
    queryKey: queryKeys.breakers,
    queryFn: () => apiRequest<Breaker[]>('api/breakers'),
    refetchInterval: SLOW_POLL_MS,
  });
}

/** Points of history per service on the Monitoring page. */
export const MONITORING_POINTS = 60;

/** What services' traces show (of one host, if given): RED per service, the calls
 * between services, the incidents raised from them. */
export function useMonitoring(host: string | null) {
  return useQuery({
    queryKey: queryKeys.monitoring(host),
    queryFn: () =>
      apiRequest<Monitoring>(
        `api/monitoring${query({ host: host ?? undefined, points: MONITORING_POINTS })}`,
      ),
    refetchInterval: usePolling(),
  });
}

/** Where traces are shown: the gateway's `jaeger_url`, asked once. */
export function useTracing() {
  return useQuery({
    queryKey: queryKeys.tracing,
    queryFn: () => apiRequest<TracingLinks>('api/tracing'),
    staleTime: Infinity,
  });
}

/** Jaeger's UI, for links to traces; null while unknown or not configured: no links. */
export function useJaegerUrl(): string | null {
  return useTracing().data?.jaeger_url ?? null;
}

/** What Medbay holds of a trace; asked for once an id is given. */
export function useTrace(traceId: string | null) {
  return useQuery({
    queryKey: queryKeys.trace(traceId ?? ''),
    queryFn: () => apiRequest<TraceFindings>(`api/traces/${encodeURIComponent(traceId ?? '')}`),
    enabled: traceId !== null,
  });
}
