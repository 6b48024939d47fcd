import SyncIcon from '@mui/icons-material/Sync';
import SyncProblemIcon from '@mui/icons-material/SyncProblem';
import WifiTetheringIcon from '@mui/icons-material/WifiTethering';
import Chip from '@mui/material/Chip';
import { useLive, type LiveStatus } from '../state/live';

const LOOK: Record<
  LiveStatus,
  { label: string; color: 'success' | 'warning' | 'default'; icon: JSX.Element }
> = {
  live: { label: 'Live', color: 'success', icon: <WifiTetheringIcon /> },
  polling: { label: 'Polling', color: 'warning', icon: <SyncProblemIcon /> },
  connecting: { label: 'Connecting', color: 'default', icon: <SyncIcon /> },
};

/** Whether the views follow live events or poll. */
export function ConnectionChip() {
  const status = useLive((state) => state.status);
  const { label, color, icon } = LOOK[status];
  return (
    <Chip
      role="status"
      aria-label={`Updates: ${label.toLowerCase()}`}
      data-status={status}
      icon={icon}
      label={label}
      color={color}
      variant="outlined"
      size="small"
    />
  );
}
