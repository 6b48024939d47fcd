import TimerOutlinedIcon from '@mui/icons-material/TimerOutlined';
import Chip from '@mui/material/Chip';
import { formatClock } from '../../lib/format';
import { useNow } from '../../lib/useNow';

/** Time left until `deadline` (ms since the epoch); amber in the last 2 minutes. */
export function Countdown({ deadline }: { deadline: number }) {
  const left = (deadline - useNow()) / 1000;
  const expired = left <= 0;
  return (
    <Chip
      role="timer"
      size="small"
      variant="outlined"
      icon={<TimerOutlinedIcon />}
      color={expired ? 'error' : left < 120 ? 'warning' : 'default'}
      label={expired ? 'Expired' : `Expires in ${formatClock(left)}`}
    />
  );
}
