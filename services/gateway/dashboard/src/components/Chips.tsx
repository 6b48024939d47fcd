import Chip, { type ChipProps } from '@mui/material/Chip';
import type { PlanStatus, Risk, Severity, StepOutcome } from '../api/types';
import { humanize } from '../lib/format';

type Color = ChipProps['color'];

const SEVERITY: Record<Severity, Color> = { warning: 'warning', critical: 'error' };
const RISK: Record<Risk, Color> = { low: 'success', medium: 'warning', high: 'error' };
const OUTCOME: Record<StepOutcome, Color> = {
  success: 'success',
  failure: 'error',
  refused: 'warning',
  dry_run: 'info',
};
const PLAN_STATUS: Record<PlanStatus, Color> = {
  pending_approval: 'warning',
  rejected: 'default',
  queued: 'info',
  running: 'info',
  finished: 'success',
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

export function PlanStatusChip({ status }: { status: PlanStatus }) {
  return <Chip size="small" variant="outlined" label={humanize(status)} color={PLAN_STATUS[status]} />;
}
