import Chip from '@mui/material/Chip';
import Table from '@mui/material/Table';
import TableBody from '@mui/material/TableBody';
import TableCell from '@mui/material/TableCell';
import TableContainer from '@mui/material/TableContainer';
import TableHead from '@mui/material/TableHead';
import TableRow from '@mui/material/TableRow';
import Typography from '@mui/material/Typography';
import { useCheckedServices } from '../../api/queries';
import { QueryStatus } from '../../components/QueryStatus';
import { formatAgo, formatDateTime } from '../../lib/format';

/** The services the collector checks on each host: up or down, and since when. */
export function CheckedServices() {
  const checked = useCheckedServices();
  const rows = checked.data ?? [];
  return (
    <>
      <QueryStatus isPending={checked.isPending} error={checked.error} what="checked services" />
      {checked.data && rows.length === 0 && (
        <Typography color="text.secondary">The collector checks no service yet.</Typography>
      )}
      {rows.length > 0 && (
        <TableContainer>
          <Table size="small" aria-label="Checked services">
            <TableHead>
              <TableRow>
                <TableCell>Host</TableCell>
                <TableCell>Service</TableCell>
                <TableCell>State</TableCell>
                <TableCell>Since</TableCell>
              </TableRow>
            </TableHead>
            <TableBody>
              {rows.map((row) => (
                <TableRow key={`${row.host}/${row.service}`} data-service={row.service} data-up={row.up}>
                  <TableCell>{row.host}</TableCell>
                  <TableCell>{row.service}</TableCell>
                  <TableCell>
                    <Chip
                      size="small"
                      label={row.up ? 'Up' : 'Down'}
                      color={row.up ? 'success' : 'error'}
                      variant={row.up ? 'outlined' : 'filled'}
                    />
                  </TableCell>
                  <TableCell>
                    <time dateTime={row.since} title={`last checked ${formatDateTime(row.checked_at)}`}>
                      {formatDateTime(row.since)}
                    </time>{' '}
                    ({formatAgo(row.since)})
                  </TableCell>
                </TableRow>
              ))}
            </TableBody>
          </Table>
        </TableContainer>
      )}
    </>
  );
}
