import ExpandMoreIcon from '@mui/icons-material/ExpandMore';
import Accordion from '@mui/material/Accordion';
import AccordionDetails from '@mui/material/AccordionDetails';
import AccordionSummary from '@mui/material/AccordionSummary';
import Box from '@mui/material/Box';
import Typography from '@mui/material/Typography';
import { useIncident, useJaegerUrl } from '../../api/queries';
import type { Episode, TimelineEntry } from '../../api/types';
import { QueryStatus } from '../../components/QueryStatus';
import { formatDateTime } from '../../lib/format';
import { traceUrl } from '../../lib/jaeger';
import type { PlanTrace } from './TimelineDetails';
import { TimelineItem } from './TimelineItem';

/** The trace of a plan entry (the whole way from metric to fix), and where Jaeger shows
 * it if a Jaeger UI is configured. */
function traceOf(entry: TimelineEntry, jaegerUrl: string | null): PlanTrace | null {
  if (entry.event.type !== 'plan.created' || !entry.trace_id) return null;
  return { id: entry.trace_id, url: jaegerUrl === null ? null : traceUrl(jaegerUrl, entry.trace_id) };
}

/** `Episode 3 · opened 2026-01-10 12:00:00 · resolved 12:05:00 · 1 plan`. */
export function episodeTitle(episode: Episode): string {
  const opened = episode.opened_at ? `opened ${formatDateTime(episode.opened_at)}` : 'opening not held';
  const closed =
    episode.resolved_at !== null
      ? `resolved ${formatDateTime(episode.resolved_at)}`
      : episode.state === 'open'
        ? 'still open'
        : null;
  const plans = `${episode.plans.length} ${episode.plans.length === 1 ? 'plan' : 'plans'}`;
  return [`Episode ${episode.number}`, opened, closed, plans].filter(Boolean).join(' · ');
}

function Entries({ episode, jaegerUrl }: { episode: Episode; jaegerUrl: string | null }) {
  return (
    <Box component="ol" aria-label="Timeline" sx={{ listStyle: 'none', m: 0, p: 0 }}>
      {episode.timeline.map((entry) => (
        <TimelineItem key={entry.event.event_id} entry={entry} trace={traceOf(entry, jaegerUrl)} />
      ))}
    </Box>
  );
}

/**
 * The incident's episodes, newest first, each an issue opened ... resolved with its
 * plans, approvals and results (oldest first): the latest open, older ones folded.
 */
export function IncidentTimeline({ fingerprint }: { fingerprint: string }) {
  const incident = useIncident(fingerprint);
  const jaegerUrl = useJaegerUrl();
  const detail = incident.data;
  const [latest, ...older] = detail?.episodes ?? [];
  return (
    <>
      <QueryStatus isPending={incident.isPending} error={incident.error} what="timeline" />
      {detail && detail.timeline_dropped > 0 && (
        <Typography variant="body2" color="text.secondary" sx={{ mb: 1 }}>
          {detail.timeline_dropped} older events are not shown.
        </Typography>
      )}
      {detail && latest === undefined && (
        <Typography color="text.secondary">No events recorded for this incident.</Typography>
      )}
      {latest && (
        <Box component="section" aria-label={episodeTitle(latest)} data-episode={latest.number}>
          {older.length > 0 && (
            <Typography variant="body2" color="text.secondary" sx={{ mb: 1 }}>
              {episodeTitle(latest)}
            </Typography>
          )}
          <Entries episode={latest} jaegerUrl={jaegerUrl} />
        </Box>
      )}
      {older.length > 0 && (
        <Box sx={{ mt: 1 }}>
          <Typography variant="body2" color="text.secondary" sx={{ mb: 0.5 }}>
            Earlier episodes
          </Typography>
          {older.map((episode) => (
            <Accordion
              key={episode.number}
              disableGutters
              variant="outlined"
              slotProps={{ heading: { component: 'h3' }, transition: { unmountOnExit: true } }}
              data-episode={episode.number}
            >
              <AccordionSummary
                expandIcon={<ExpandMoreIcon />}
                id={`episode-${fingerprint}-${episode.number}`}
                aria-controls={`episode-${fingerprint}-${episode.number}-details`}
              >
                <Typography variant="body2">{episodeTitle(episode)}</Typography>
              </AccordionSummary>
              <AccordionDetails>
                <Entries episode={episode} jaegerUrl={jaegerUrl} />
              </AccordionDetails>
            </Accordion>
          ))}
        </Box>
      )}
    </>
  );
}
