import Alert from '@mui/material/Alert';
import { POLL_MS } from '../api/queries';
import { useLive } from '../state/live';

/** Says so when the live connection is down and the views poll instead. */
export function PollingBanner() {
  const polling = useLive((state) => state.status === 'polling');
  if (!polling) return null;
  return (
    <Alert severity="warning" variant="outlined" sx={{ mb: 2 }}>
      Live updates are interrupted: refreshing every {POLL_MS / 1000} s until the connection is back.
    </Alert>
  );
}
