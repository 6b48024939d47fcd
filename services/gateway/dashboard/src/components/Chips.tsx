import Chip, { type ChipProps } from '@mui/material/Chip';
import type { IncidentStatus, Risk, Severity, StepOutcome } from '../api/types';
import { humanize } from '../lib/format';
import { STATUS_LABELS } from '../lib/labels';

type Color = ChipProps['color'];

const SEVERITY: Record<Severity, Color> = { warning: 'warning', critical: 'error' };
const RISK: Record<Risk, Color> = { low: 'success', medium: 'warning', high: 'error' };
const OUTCOME: Record<StepOutcome, Color> = {
  success: 'success',
  failure: 'error',
  refused: 'warning',
  dry_run: 'info',
  interrupted: 'error',
};
/** Green for a verified fix only; red for every way of not fixing it. */
const STATUS: Record<IncidentStatus, Color> = {
  not_planned: 'default',
  pending_approval: 'warning',
  queued: 'info',
  running: 'info',
  verified: 'success',
  not_fixed: 'error',
  failed: 'error',
  refused: 'error',
  dry_run: 'default',
  alerted: 'warning',
  interrupted: 'error',
  rejected: 'default',
  expired: 'default',
};

export function SeverityChip({ severity }: { severity: Severity }) {
  return <Chip size="small" label={humanize(severity)} color={SEVERITY[severity]} />;
}

export function RiskChip({ risk }: { risk: Risk }) {
  return <Chip size="small" variant="outlined" label={`${humanize(risk)} risk`} color={RISK[risk]} />;
}

export function OutcomeChip({ outcome }: { outcome: StepOutcome }) {
  return <Chip size="small" variant="outlined" label={humanize(outcome)} color={OUTCOME[outcome]} />;
}

/** What was done about an incident, or how a plan ended (a plan outcome is one of these). */
export function IncidentStatusChip({ status }: { status: IncidentStatus }) {
  const color = STATUS[status];
  return (
    <Chip
      size="small"
      variant={color === 'success' || color === 'error' ? 'filled' : 'outlined'}
      label={STATUS_LABELS[status]}
      color={color}
      data-incident-status={status}
    />
  );
}
