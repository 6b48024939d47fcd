import Card from '@mui/material/Card';
import CardContent from '@mui/material/CardContent';
import Chip from '@mui/material/Chip';
import Stack from '@mui/material/Stack';
import Typography from '@mui/material/Typography';
import type { ServiceHealth } from '../../api/types';
import { formatDuration, humanize } from '../../lib/format';

const STATE = {
  ok: { label: 'Running', color: 'success' },
  unreachable: { label: 'Stopped', color: 'warning' },
  unhealthy: { label: 'Error', color: 'error' },
} as const;

/** One Medbay service: running, stopped (not answering) or in error, and for how long up. */
export function ServiceCard({ health }: { health: ServiceHealth }) {
  const state = STATE[health.status];
  const uptime = health.detail?.uptime_seconds;
  const problems = Object.entries(health.detail?.problems ?? {});
  const mode = typeof health.info.mode === 'string' ? health.info.mode : null;
  return (
    <Card component="article" aria-label={`Service ${health.service}`} data-service={health.service}>
      <CardContent sx={{ display: 'grid', gap: 1 }}>
        <Stack direction="row" sx={{ alignItems: 'center', justifyContent: 'space-between', gap: 1 }}>
          <Typography variant="h3" component="h3">
            {humanize(health.service)}
          </Typography>
          <Chip label={state.label} color={state.color} size="small" data-state={health.status} />
        </Stack>
        <Typography variant="body2" color="text.secondary">
          {uptime !== undefined ? `Up ${formatDuration(uptime)}` : (health.error ?? 'No answer')}
          {health.latency_ms !== null &&
            health.status !== 'unreachable' &&
            ` · ${Math.round(health.latency_ms)} ms`}
        </Typography>
        {mode && (
          <Typography variant="body2" data-mode={mode}>
            Mode: {mode}
          </Typography>
        )}
        {problems.map(([name, text]) => (
          <Typography key={name} variant="body2" color="error.main">
            {name}: {text}
          </Typography>
        ))}
      </CardContent>
    </Card>
  );
}
