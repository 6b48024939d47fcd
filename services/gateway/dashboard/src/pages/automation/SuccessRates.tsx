import Box from '@mui/material/Box';
import LinearProgress from '@mui/material/LinearProgress';
import Paper from '@mui/material/Paper';
import Table from '@mui/material/Table';
import TableBody from '@mui/material/TableBody';
import TableCell from '@mui/material/TableCell';
import TableContainer from '@mui/material/TableContainer';
import TableHead from '@mui/material/TableHead';
import TableRow from '@mui/material/TableRow';
import Typography from '@mui/material/Typography';
import type { ActionRate } from '../../api/types';
import { formatPercent, humanize } from '../../lib/format';

/** How often each action's fix was verified, as the planner counts it. */
export function SuccessRates({ rates }: { rates: Record<string, ActionRate> }) {
  const rows = Object.entries(rates).sort(([a], [b]) => a.localeCompare(b));
  if (rows.length === 0) {
    return <Typography color="text.secondary">No action has an outcome yet.</Typography>;
  }
  return (
    <TableContainer component={Paper} variant="outlined">
      <Table size="small" aria-label="Success rate per action">
        <TableHead>
          <TableRow>
            <TableCell>Action</TableCell>
            <TableCell align="right">Successes</TableCell>
            <TableCell align="right">Failures</TableCell>
            <TableCell sx={{ minWidth: 160 }}>Success rate</TableCell>
          </TableRow>
        </TableHead>
        <TableBody>
          {rows.map(([action, rate]) => (
            <TableRow key={action}>
              <TableCell component="th" scope="row">
                {humanize(action)}
              </TableCell>
              <TableCell align="right">{rate.successes}</TableCell>
              <TableCell align="right">{rate.failures}</TableCell>
              <TableCell>
                <Box sx={{ display: 'flex', alignItems: 'center', gap: 1 }}>
                  <LinearProgress
                    variant="determinate"
                    value={rate.rate * 100}
                    aria-label={`${humanize(action)} success rate`}
                    sx={{ flexGrow: 1 }}
                  />
                  <Typography variant="body2" sx={{ minWidth: 56, textAlign: 'right' }}>
                    {formatPercent(rate.rate * 100, 0)}
                  </Typography>
                </Box>
              </TableCell>
            </TableRow>
          ))}
        </TableBody>
      </Table>
    </TableContainer>
  );
}
