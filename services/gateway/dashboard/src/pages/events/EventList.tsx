import Box from '@mui/material/Box';
import Chip from '@mui/material/Chip';
import Paper from '@mui/material/Paper';
import Typography from '@mui/material/Typography';
import { describeEvent } from '../../lib/describeEvent';
import { formatTime } from '../../lib/format';
import type { LiveEvent } from '../../state/live';

const FAMILY_COLOR = {
  metric: 'default',
  issue: 'warning',
  plan: 'primary',
  action: 'secondary',
  breaker: 'info',
} as const;

function EventRow({ event }: { event: LiveEvent }) {
  const family = event.type.split('.')[0] as keyof typeof FAMILY_COLOR;
  return (
    <Box
      component="li"
      data-type={event.type}
      sx={{ borderBottom: 1, borderColor: 'divider', py: 1, px: 1.5 }}
    >
      <Box component="details">
        <Box
          component="summary"
          sx={{ cursor: 'pointer', display: 'flex', flexWrap: 'wrap', alignItems: 'center', gap: 1 }}
        >
          <Typography
            component="time"
            variant="body2"
            color="text.secondary"
            dateTime={event.event.timestamp}
          >
            {formatTime(event.event.timestamp)}
          </Typography>
          <Chip
            size="small"
            variant="outlined"
            label={event.type}
            color={FAMILY_COLOR[family] ?? 'default'}
          />
          {event.host && (
            <Typography variant="body2" sx={{ fontWeight: 600 }}>
              {event.host}
            </Typography>
          )}
          <Typography variant="body2">{describeEvent(event.event)}</Typography>
        </Box>
        <Box
          component="pre"
          tabIndex={0}
          aria-label={`Event ${event.stream} ${event.seq} as JSON`}
          sx={{
            m: 0,
            mt: 1,
            p: 1,
            borderRadius: 1,
            bgcolor: 'action.hover',
            fontSize: '0.8rem',
            maxHeight: 300,
            overflow: 'auto',
          }}
        >
          {JSON.stringify(event.event, null, 2)}
        </Box>
      </Box>
    </Box>
  );
}

/** Events newest first; each opens into its JSON. */
export function EventList({ events }: { events: LiveEvent[] }) {
  return (
    <Paper variant="outlined">
      <Box component="ol" aria-label="Events, newest first" sx={{ listStyle: 'none', m: 0, p: 0 }}>
        {events.map((event) => (
          <EventRow key={event.key} event={event} />
        ))}
      </Box>
    </Paper>
  );
}
