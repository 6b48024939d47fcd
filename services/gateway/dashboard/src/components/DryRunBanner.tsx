import Alert from '@mui/material/Alert';
import { useExecutorMode } from '../api/queries';

/** On every page while the executor runs in dry-run: nothing Medbay plans is done. */
export function DryRunBanner() {
  const mode = useExecutorMode();
  if (mode !== 'dry-run') return null;
  return (
    <Alert severity="warning" variant="outlined" sx={{ mb: 2 }} data-mode="dry-run">
      Dry-run: the executor reports what it would do and changes nothing.
    </Alert>
  );
}
