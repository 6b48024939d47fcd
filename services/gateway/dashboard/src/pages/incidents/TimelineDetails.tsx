import OpenInNewIcon from '@mui/icons-material/OpenInNew';
import Box from '@mui/material/Box';
import Chip from '@mui/material/Chip';
import Link from '@mui/material/Link';
import Stack from '@mui/material/Stack';
import Typography from '@mui/material/Typography';
import type {
  ActionResult,
  AlertRaised,
  Approval,
  IssueOpened,
  IssueResolved,
  IssueUpdated,
  Plan,
  PlanFinished,
} from '../../api/types';
import { IncidentStatusChip, OutcomeChip, RiskChip, SeverityChip } from '../../components/Chips';
import { humanize, shortId } from '../../lib/format';
import { formatMs, formatPerSecond, formatRatio } from '../../lib/traces';
import { visuallyHidden } from '../../components/layout';

/** A plan's trace: its id, and where Jaeger shows it (null: no Jaeger UI configured). */
export interface PlanTrace {
  id: string;
  url: string | null;
}

const SIGNALS: [key: string, label: string, format: (value: number) => string][] = [
  ['requests_per_second', 'requests', formatPerSecond],
  ['errors_per_second', 'errors', formatPerSecond],
  ['error_ratio', 'error ratio', formatRatio],
  ['latency_p95_ms', 'p95', formatMs],
];

/** The service's trace figures an issue carries: `40/s requests · 12/s errors · p95 2.5 s`. */
export function describeSignals(signals: Record<string, number>): string {
  return SIGNALS.flatMap(([key, label, format]) => {
    const value = signals[key];
    return value === undefined
      ? []
      : [label === 'p95' ? `p95 ${format(value)}` : `${format(value)} ${label}`];
  }).join(' · ');
}

const CHIPS = { direction: 'row', sx: { gap: 1, flexWrap: 'wrap', alignItems: 'center' } } as const;

export function IssueDetails({ issue }: { issue: IssueOpened | IssueUpdated | IssueResolved }) {
  return (
    <Box sx={{ display: 'grid', gap: 0.5 }}>
      <Stack {...CHIPS}>
        <SeverityChip severity={issue.severity} />
        <Typography variant="body2" color="text.secondary">
          {issue.metric} = {issue.value}
          {issue.threshold !== null && ` (threshold ${issue.threshold})`} · detected by {issue.detector}
        </Typography>
      </Stack>
      {issue.detail && <Typography variant="body2">{issue.detail}</Typography>}
      {describeSignals(issue.signals ?? {}) && (
        <Typography variant="body2" color="text.secondary" data-testid="signals">
          Traces: {describeSignals(issue.signals ?? {})}
        </Typography>
      )}
    </Box>
  );
}

export function PlanDetails({ plan, trace }: { plan: Plan; trace: PlanTrace | null }) {
  return (
    <Box sx={{ display: 'grid', gap: 1 }} data-plan-id={plan.plan_id}>
      <Stack {...CHIPS}>
        <Chip size="small" label={`Confidence ${Math.round(plan.confidence * 100)} %`} />
        <RiskChip risk={plan.risk} />
        <Chip
          size="small"
          variant="outlined"
          label={plan.requires_approval ? 'Needs approval' : 'Automatic'}
          color={plan.requires_approval ? 'warning' : 'default'}
        />
        <Typography variant="body2" color="text.secondary">
          plan {shortId(plan.plan_id)} · {plan.model_version}
        </Typography>
      </Stack>
      <Box component="ol" sx={{ m: 0, pl: 3 }}>
        {plan.steps.map((step, index) => (
          <Typography component="li" variant="body2" key={index}>
            {humanize(step.action)} {step.target} ({step.risk} risk, about {step.estimated_seconds} s)
          </Typography>
        ))}
      </Box>
      {plan.reason && (
        <Typography variant="body2" color="text.secondary">
          {plan.reason}
        </Typography>
      )}
      {trace?.url && (
        <Link
          href={trace.url}
          target="_blank"
          rel="noreferrer"
          variant="body2"
          sx={{ display: 'inline-flex', alignItems: 'center', gap: 0.5, width: 'fit-content' }}
        >
          Trace of plan {shortId(plan.plan_id)} in Jaeger
          <OpenInNewIcon fontSize="inherit" />
          <Box component="span" sx={visuallyHidden}>
            (opens in a new tab)
          </Box>
        </Link>
      )}
      {trace && trace.url === null && (
        <Typography variant="body2" color="text.secondary" sx={{ wordBreak: 'break-all' }}>
          Trace <code>{trace.id}</code>
        </Typography>
      )}
    </Box>
  );
}

export function ApprovalDetails({ approval }: { approval: Approval }) {
  const approved = approval.decision === 'approve';
  return (
    <Stack {...CHIPS}>
      <Chip size="small" label={approved ? 'Approved' : 'Rejected'} color={approved ? 'success' : 'error'} />
      <Typography variant="body2" color="text.secondary">
        by {approval.decided_by} via {approval.channel}
        {approval.reason && `: ${approval.reason}`}
      </Typography>
    </Stack>
  );
}

export function ResultDetails({ result }: { result: ActionResult }) {
  return (
    <Box sx={{ display: 'grid', gap: 0.5 }}>
      <Stack {...CHIPS}>
        <Typography variant="body2">
          Step {result.step_index + 1}: {humanize(result.action)} {result.target}
        </Typography>
        {result.outcome ? <OutcomeChip outcome={result.outcome} /> : <Chip size="small" label="Started" />}
        {result.verified !== null && (
          <Chip
            size="small"
            variant="outlined"
            label={result.verified ? 'Fix verified' : 'Fix not verified'}
            color={result.verified ? 'success' : 'warning'}
          />
        )}
        {result.dry_run && result.outcome !== 'dry_run' && (
          <Chip size="small" variant="outlined" label="Dry run" />
        )}
      </Stack>
      {result.output && (
        <Box
          component="pre"
          tabIndex={0}
          aria-label={`Output of step ${result.step_index + 1}`}
          sx={{
            m: 0,
            p: 1,
            borderRadius: 1,
            bgcolor: 'action.hover',
            fontSize: '0.8rem',
            whiteSpace: 'pre-wrap',
            wordBreak: 'break-word',
            maxHeight: 200,
            overflow: 'auto',
          }}
        >
          {result.output}
        </Box>
      )}
    </Box>
  );
}

/** How the plan ended, as the executor says: only a verified fix is shown as fixed. */
export function FinishedDetails({ finished }: { finished: PlanFinished }) {
  const steps = `${finished.steps_run} ${finished.steps_run === 1 ? 'step' : 'steps'} run`;
  return (
    <Box sx={{ display: 'grid', gap: 0.5 }}>
      <Stack {...CHIPS}>
        <IncidentStatusChip status={finished.outcome} />
        {finished.escalated && finished.outcome !== 'alerted' && (
          <Chip size="small" variant="outlined" color="warning" label="A person was alerted" />
        )}
        <Typography variant="body2" color="text.secondary">
          plan {shortId(finished.plan_id)} · {steps}
        </Typography>
      </Stack>
      {finished.detail && <Typography variant="body2">{finished.detail}</Typography>}
    </Box>
  );
}

export function AlertDetails({ alert }: { alert: AlertRaised }) {
  return (
    <Box sx={{ display: 'grid', gap: 0.5 }}>
      <Typography variant="body2">Alert sent to {alert.target}</Typography>
      <Typography
        variant="body2"
        color="text.secondary"
        sx={{ whiteSpace: 'pre-wrap', wordBreak: 'break-word' }}
      >
        {alert.message}
      </Typography>
    </Box>
  );
}
