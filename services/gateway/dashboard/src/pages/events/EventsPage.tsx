import Typography from '@mui/material/Typography';
import { useEffect, useState } from 'react';
import { useHostMetrics, useRecentEvents } from '../../api/queries';
import { QueryStatus } from '../../components/QueryStatus';
import { PageHeader } from '../../components/PageHeader';
import { Section } from '../../components/Section';
import { MAX_EVENTS, useLive } from '../../state/live';
import { useCanOperate } from '../../state/session';
import { DEFAULT_FILTER, matches } from './eventFilter';
import { EventFilters } from './EventFilters';
import { EventList } from './EventList';
import { ReplayForm } from './ReplayForm';

/**
 * The latest events, filtered: those the gateway read before the page opened, then
 * live ones as they come (each once); and replaying a recorded range for debugging.
 */
export default function EventsPage() {
  const [filter, setFilter] = useState(DEFAULT_FILTER);
  const recent = useRecentEvents();
  const addHistory = useLive((state) => state.addHistory);
  useEffect(() => {
    if (recent.data) addHistory(recent.data);
  }, [recent.data, addHistory]);
  const events = useLive((state) => state.events);
  const status = useLive((state) => state.status);
  const metricHosts = useHostMetrics().data?.map((h) => h.host) ?? [];
  const canOperate = useCanOperate();
  const hosts = [...new Set([...metricHosts, ...events.flatMap((e) => (e.host ? [e.host] : []))])].sort();
  const shown = events.filter((event) => matches(filter, event));
  return (
    <>
      <PageHeader title="Events" />
      <Section title="Live stream" id="stream-title">
        <EventFilters filter={filter} hosts={hosts} onChange={setFilter} />
        <QueryStatus isPending={recent.isPending} error={recent.error} what="recent events" />
        <Typography variant="body2" color="text.secondary" sx={{ mb: 1 }}>
          {shown.length} of the latest {Math.min(events.length, MAX_EVENTS)} events
          {status === 'live' ? ', with new ones as they come' : ' (live updates are interrupted)'}.
        </Typography>
        {shown.length > 0 && <EventList events={shown} />}
      </Section>
      {canOperate && (
        <Section title="Replay a time range" id="replay-title">
          <ReplayForm />
        </Section>
      )}
    </>
  );
}
