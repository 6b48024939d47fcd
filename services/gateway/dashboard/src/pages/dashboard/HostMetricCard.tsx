import NetworkCheckIcon from '@mui/icons-material/NetworkCheck';
import Box from '@mui/material/Box';
import Card from '@mui/material/Card';
import CardContent from '@mui/material/CardContent';
import Typography from '@mui/material/Typography';
import type { HostMetrics } from '../../api/types';
import { formatRate, formatTime } from '../../lib/format';
import { summarizeHost } from '../../lib/hostSummary';
import { UsageBar } from './UsageBar';

function Waiting({ what }: { what: string }) {
  return (
    <Typography variant="body2" color="text.secondary">
      {what}: waiting for the next reading
    </Typography>
  );
}

/** One host's CPU, memory, disk and network, as last collected. */
export function HostMetricCard({ metrics }: { metrics: HostMetrics }) {
  const { cpu, memory, disk, network } = summarizeHost(metrics.series);
  return (
    <Card
      component="article"
      aria-label={`Host ${metrics.host}`}
      data-host={metrics.host}
      data-collected-at={metrics.collected_at}
    >
      <CardContent sx={{ display: 'grid', gap: 1.5 }}>
        <Box sx={{ display: 'flex', alignItems: 'baseline', justifyContent: 'space-between', gap: 1 }}>
          <Typography variant="h3" component="h3" noWrap>
            {metrics.host}
          </Typography>
          <Typography variant="caption" color="text.secondary">
            updated <time dateTime={metrics.collected_at}>{formatTime(metrics.collected_at)}</time>
          </Typography>
        </Box>
        {cpu === null ? <Waiting what="CPU" /> : <UsageBar kind="cpu" label="CPU" percent={cpu} />}
        {memory === null ? (
          <Waiting what="Memory" />
        ) : (
          <UsageBar kind="memory" label="Memory" percent={memory} />
        )}
        {disk === null ? (
          <Waiting what="Disk" />
        ) : (
          <UsageBar kind="disk" label="Disk" percent={disk.percent} detail={disk.mount} />
        )}
        {network === null ? (
          <Waiting what="Network" />
        ) : (
          <Box data-metric="network" sx={{ display: 'flex', alignItems: 'center', gap: 1, flexWrap: 'wrap' }}>
            <NetworkCheckIcon fontSize="small" aria-hidden />
            <Typography variant="body2">Network</Typography>
            <Typography variant="body2" sx={{ fontWeight: 700 }}>
              in {formatRate(network.received)} · out {formatRate(network.sent)}
            </Typography>
            {network.errors > 0 && (
              <Typography variant="caption" color="warning.main">
                {network.errors} errors
              </Typography>
            )}
          </Box>
        )}
      </CardContent>
    </Card>
  );
}
