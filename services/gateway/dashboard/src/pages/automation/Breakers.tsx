import Button from '@mui/material/Button';
import Paper from '@mui/material/Paper';
import Table from '@mui/material/Table';
import TableBody from '@mui/material/TableBody';
import TableCell from '@mui/material/TableCell';
import TableContainer from '@mui/material/TableContainer';
import TableHead from '@mui/material/TableHead';
import TableRow from '@mui/material/TableRow';
import Typography from '@mui/material/Typography';
import { useResetBreaker } from '../../api/mutations';
import type { Breaker } from '../../api/types';
import { formatDateTime, humanize } from '../../lib/format';
import { useNotice } from '../../state/notice';
import { useCanOperate } from '../../state/session';

/** The executor's open flap breakers; operators may close one. */
export function Breakers({ breakers }: { breakers: Breaker[] }) {
  const canOperate = useCanOperate();
  const reset = useResetBreaker();
  const show = useNotice((state) => state.show);
  if (breakers.length === 0) {
    return <Typography color="text.secondary">Every breaker is closed: no target is held back.</Typography>;
  }
  const close = (target: string) =>
    reset.mutate(target, {
      onSuccess: () => show(`Reset of the breaker for ${target} sent to the executor.`),
      onError: (error) => show(`Could not reset the breaker for ${target}: ${error.message}`, 'error'),
    });
  return (
    <TableContainer component={Paper} variant="outlined">
      <Table size="small" aria-label="Open breakers">
        <TableHead>
          <TableRow>
            <TableCell>Target</TableCell>
            <TableCell>Open since</TableCell>
            <TableCell>Why</TableCell>
            <TableCell>Actions that opened it</TableCell>
            {canOperate && <TableCell align="right">Reset</TableCell>}
          </TableRow>
        </TableHead>
        <TableBody>
          {breakers.map((breaker) => (
            <TableRow key={breaker.target} data-breaker={breaker.target}>
              <TableCell component="th" scope="row">
                {breaker.target}
              </TableCell>
              <TableCell>{formatDateTime(breaker.opened_at)}</TableCell>
              <TableCell>{breaker.reason}</TableCell>
              <TableCell>{breaker.actions.map(([action]) => humanize(action)).join(', ')}</TableCell>
              {canOperate && (
                <TableCell align="right">
                  <Button
                    size="small"
                    variant="outlined"
                    disabled={reset.isPending}
                    onClick={() => close(breaker.target)}
                    aria-label={`Reset the breaker for ${breaker.target}`}
                  >
                    Reset
                  </Button>
                </TableCell>
              )}
            </TableRow>
          ))}
        </TableBody>
      </Table>
    </TableContainer>
  );
}
