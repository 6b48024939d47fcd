import Typography from '@mui/material/Typography';
import { useState } from 'react';
import { useHostMetrics } from '../../api/queries';
import { PageHeader } from '../../components/PageHeader';
import { Section } from '../../components/Section';
import { MAX_EVENTS, useLive } from '../../state/live';
import { useCanOperate } from '../../state/session';
import { DEFAULT_FILTER, matches } from './eventFilter';
import { EventFilters } from './EventFilters';
import { EventList } from './EventList';
import { ReplayForm } from './ReplayForm';

/** The live event stream, filtered; and replaying a recorded range for debugging. */
export default function EventsPage() {
  const [filter, setFilter] = useState(DEFAULT_FILTER);
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
        <Typography variant="body2" color="text.secondary" sx={{ mb: 1 }}>
          {shown.length} of the last {Math.min(events.length, MAX_EVENTS)} events since the dashboard was
          opened
          {status !== 'live' && ' (live updates are interrupted)'}.
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
