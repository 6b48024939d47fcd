import Alert from '@mui/material/Alert';
import Snackbar from '@mui/material/Snackbar';
import { useNotice } from '../state/notice';

/** What the last action did; errors stay until dismissed. */
export function NoticeBar() {
  const { notice, dismiss } = useNotice();
  if (notice === null) return null;
  return (
    <Snackbar
      key={notice.id}
      open
      autoHideDuration={notice.severity === 'error' ? null : 6000}
      onClose={(_, reason) => reason !== 'clickaway' && dismiss()}
      anchorOrigin={{ vertical: 'bottom', horizontal: 'center' }}
    >
      <Alert severity={notice.severity} variant="filled" onClose={dismiss} sx={{ width: '100%' }}>
        {notice.message}
      </Alert>
    </Snackbar>
  );
}
