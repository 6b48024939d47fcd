import Box from '@mui/material/Box';
import Typography from '@mui/material/Typography';
import { useDashboardConfig, useIncident } from '../../api/queries';
import type { TimelineEntry } from '../../api/types';
import { QueryStatus } from '../../components/QueryStatus';
import { traceUrl } from '../../lib/jaeger';
import { TimelineItem } from './TimelineItem';

/** Where Jaeger shows the trace of a plan entry: the whole way from metric to fix. */
function traceUrlOf(entry: TimelineEntry, jaegerUrl: string | null): string | null {
  if (jaegerUrl === null || entry.event.type !== 'plan.created' || !entry.trace_id) return null;
  return traceUrl(jaegerUrl, entry.trace_id);
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
            <TimelineItem key={entry.event.event_id} entry={entry} traceUrl={traceUrlOf(entry, jaegerUrl)} />
          ))}
        </Box>
      )}
    </>
  );
}
