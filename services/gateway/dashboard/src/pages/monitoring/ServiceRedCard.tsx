import Box from '@mui/material/Box';
import Card from '@mui/material/Card';
import CardContent from '@mui/material/CardContent';
import Chip from '@mui/material/Chip';
import Table from '@mui/material/Table';
import TableBody from '@mui/material/TableBody';
import TableCell from '@mui/material/TableCell';
import TableHead from '@mui/material/TableHead';
import TableRow from '@mui/material/TableRow';
import Typography from '@mui/material/Typography';
import type { ServiceRed } from '../../api/types';
import { formatTime } from '../../lib/format';
import { formatMs, formatPerSecond, formatRatio } from '../../lib/traces';
import { RedChart } from './RedChart';

/** Operations listed per service; the busiest come first. */
const OPERATIONS_SHOWN = 8;

function Figure({ label, value, testId }: { label: string; value: string; testId: string }) {
  return (
    <Box>
      <Typography variant="caption" color="text.secondary" component="div">
        {label}
      </Typography>
      <Typography variant="body1" sx={{ fontWeight: 700 }} data-testid={testId}>
        {value}
      </Typography>
    </Box>
  );
}

/** One service on one host: its rates, error ratio and latency now and over time, and
 * its busiest operations. */
export function ServiceRedCard({ red, showHost }: { red: ServiceRed; showHost: boolean }) {
  const { latest } = red;
  const title = showHost ? `${red.service} on ${red.host}` : red.service;
  const shown = red.operations.slice(0, OPERATIONS_SHOWN);
  const more = red.operations.length - shown.length;
  return (
    <Card component="article" aria-label={`Service ${title}`} data-service={red.service} data-host={red.host}>
      <CardContent sx={{ display: 'grid', gap: 1.5 }}>
        <Box sx={{ display: 'flex', alignItems: 'baseline', gap: 1, flexWrap: 'wrap' }}>
          <Typography variant="h3" component="h3" sx={{ flexGrow: 1, wordBreak: 'break-word' }}>
            {title}
          </Typography>
          {red.current ? (
            <Typography variant="caption" color="text.secondary">
              updated <time dateTime={red.last_seen}>{formatTime(red.last_seen)}</time>
            </Typography>
          ) : (
            <Chip
              size="small"
              variant="outlined"
              color="warning"
              label={`No spans since ${formatTime(red.last_seen)}`}
            />
          )}
        </Box>
        <Box sx={{ display: 'grid', gridTemplateColumns: 'repeat(auto-fit, minmax(90px, 1fr))', gap: 1 }}>
          <Figure label="Requests" value={formatPerSecond(latest.requests_per_second)} testId="requests" />
          <Figure label="Errors" value={formatPerSecond(latest.errors_per_second)} testId="errors" />
          <Figure label="Error ratio" value={formatRatio(latest.error_ratio)} testId="error-ratio" />
          <Figure label="p95 latency" value={formatMs(latest.latency_p95_ms)} testId="p95" />
        </Box>
        <RedChart kind="rates" service={red.service} history={red.history} />
        <RedChart kind="latency" service={red.service} history={red.history} />
        {shown.length > 0 && (
          <Box sx={{ overflowX: 'auto' }}>
            <Table size="small" aria-label={`Operations of ${title}`}>
              <TableHead>
                <TableRow>
                  <TableCell>Operation</TableCell>
                  <TableCell align="right">Requests</TableCell>
                  <TableCell align="right">Errors</TableCell>
                  <TableCell align="right">p95</TableCell>
                </TableRow>
              </TableHead>
              <TableBody>
                {shown.map((op) => (
                  <TableRow key={op.operation} data-operation={op.operation}>
                    <TableCell component="th" scope="row" sx={{ wordBreak: 'break-word' }}>
                      {op.operation}
                    </TableCell>
                    <TableCell align="right">{formatPerSecond(op.requests_per_second)}</TableCell>
                    <TableCell align="right">{formatPerSecond(op.errors_per_second)}</TableCell>
                    <TableCell align="right">{formatMs(op.latency_p95_ms)}</TableCell>
                  </TableRow>
                ))}
              </TableBody>
            </Table>
            {more > 0 && (
              <Typography variant="caption" color="text.secondary">
                and {more} quieter {more === 1 ? 'operation' : 'operations'}
              </Typography>
            )}
          </Box>
        )}
      </CardContent>
    </Card>
  );
}
