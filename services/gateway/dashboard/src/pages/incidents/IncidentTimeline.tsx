import Box from '@mui/material/Box';
import Typography from '@mui/material/Typography';
import { useDashboardConfig, useIncident } from '../../api/queries';
import type { IncidentDetail, TimelineEntry } from '../../api/types';
import { QueryStatus } from '../../components/QueryStatus';
import { planTraceUrl } from '../../lib/jaeger';
import { TimelineItem } from './TimelineItem';

/** Where Jaeger shows the trace of a plan entry's plan; only a plan the executor ran has one. */
function traceUrlOf(entry: TimelineEntry, incident: IncidentDetail, jaegerUrl: string | null): string | null {
  if (jaegerUrl === null || entry.event.type !== 'plan.created') return null;
  const planId = entry.event.plan_id;
  const ran = incident.plans.some((p) => p.plan_id === planId && p.results.length > 0);
  return ran ? planTraceUrl(jaegerUrl, planId) : null;
}

/** The incident's events, oldest first: issue, plan, approval, each step's result. */
export function IncidentTimeline({ fingerprint }: { fingerprint: string }) {
  const incident = useIncident(fingerprint);
  const jaegerUrl = useDashboardConfig().data?.jaegerUrl ?? null;
  const detail = incident.data;
  return (
    <>
      <QueryStatus isPending={incident.isPending} error={incident.error} what="timeline" />
      {detail && detail.timeline_dropped > 0 && (
        <Typography variant="body2" color="text.secondary" sx={{ mb: 1 }}>
          {detail.timeline_dropped} older events are not shown.
        </Typography>
      )}
      {detail && detail.timeline.length === 0 && (
        <Typography color="text.secondary">No events recorded for this incident.</Typography>
      )}
      {detail && (
        <Box component="ol" aria-label="Timeline" sx={{ listStyle: 'none', m: 0, p: 0 }}>
          {detail.timeline.map((entry) => (
            <TimelineItem
              key={entry.event.event_id}
              entry={entry}
              traceUrl={traceUrlOf(entry, detail, jaegerUrl)}
            />
          ))}
        </Box>
      )}
    </>
  );
}
