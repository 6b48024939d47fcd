import WarningAmberIcon from '@mui/icons-material/WarningAmber';
import Box from '@mui/material/Box';
import LinearProgress from '@mui/material/LinearProgress';
import Typography from '@mui/material/Typography';
import { formatPercent } from '../../lib/format';
import { LEVEL_COLOR, levelOf, THRESHOLDS, type UsageKind } from '../../lib/thresholds';

interface UsageBarProps {
  kind: UsageKind;
  label: string;
  percent: number;
  /** Shown after the label: the mount of a disk. */
  detail?: string;
}

/** A percentage as a bar coloured by the detector's thresholds, with a warning when high. */
export function UsageBar({ kind, label, percent, detail }: UsageBarProps) {
  const level = levelOf(kind, percent);
  const color = LEVEL_COLOR[level];
  const threshold = THRESHOLDS[kind][level === 'critical' ? 'critical' : 'warning'];
  return (
    <Box data-metric={kind} data-level={level}>
      <Box sx={{ display: 'flex', justifyContent: 'space-between', gap: 1, mb: 0.5 }}>
        <Typography variant="body2" noWrap>
          {label}
          {detail && (
            <Typography component="span" variant="body2" color="text.secondary">
              {' '}
              {detail}
            </Typography>
          )}
        </Typography>
        <Typography variant="body2" sx={{ fontWeight: 700 }} data-testid={`${kind}-value`}>
          {formatPercent(percent)}
        </Typography>
      </Box>
      <LinearProgress
        variant="determinate"
        value={Math.min(Math.max(percent, 0), 100)}
        color={color}
        aria-label={`${label} use`}
      />
      {level !== 'ok' && (
        <Typography
          variant="caption"
          color={`${color}.main`}
          sx={{ display: 'flex', alignItems: 'center', gap: 0.5, mt: 0.5 }}
        >
          <WarningAmberIcon fontSize="inherit" aria-hidden />
          {level === 'critical' ? 'Critical' : 'High'}: at or over {threshold} %
        </Typography>
      )}
    </Box>
  );
}
