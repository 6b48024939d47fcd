import Box from '@mui/material/Box';
import Card from '@mui/material/Card';
import CardContent from '@mui/material/CardContent';
import Chip from '@mui/material/Chip';
import Stack from '@mui/material/Stack';
import Typography from '@mui/material/Typography';
import type { PendingApproval } from '../../api/types';
import { RiskChip, SeverityChip } from '../../components/Chips';
import { formatAgo, humanize, shortId } from '../../lib/format';
import { askedBy, KIND_LABELS, quickActionTitle } from '../../lib/labels';
import { useCanOperate } from '../../state/session';
import { Countdown } from './Countdown';
import { DecisionForm } from './DecisionForm';

/**
 * A plan waiting for a decision: what it would do, how sure the planner is, and the
 * time left until the approver's deadline (none shown when no approver set one).
 */
export function ApprovalCard({ pending }: { pending: PendingApproval }) {
  const { plan, issue, quick_action: quick } = pending;
  const canOperate = useCanOperate();
  const titleId = `plan-${plan.plan_id}`;
  return (
    <Card component="article" aria-labelledby={titleId} data-plan-id={plan.plan_id}>
      <CardContent sx={{ display: 'grid', gap: 1.5 }}>
        <Stack direction="row" sx={{ gap: 1, flexWrap: 'wrap', alignItems: 'center' }}>
          <Typography id={titleId} variant="h3" component="h2" sx={{ flexGrow: 1 }}>
            {quick ? quickActionTitle(quick, plan.host) : `${KIND_LABELS[plan.issue_kind]} on ${plan.host}`} ·
            plan {shortId(plan.plan_id)}
          </Typography>
          {pending.deadline !== null ? (
            <Countdown deadline={Date.parse(pending.deadline)} />
          ) : (
            <Typography variant="body2" color="text.secondary">
              No deadline known
            </Typography>
          )}
        </Stack>
        {quick && askedBy(quick) && <Typography variant="body2">Quick action {askedBy(quick)}</Typography>}
        <Stack direction="row" sx={{ gap: 1, flexWrap: 'wrap', alignItems: 'center' }}>
          <SeverityChip severity={plan.severity} />
          <Chip size="small" label={`Confidence ${Math.round(plan.confidence * 100)} %`} />
          <RiskChip risk={plan.risk} />
          <Typography variant="body2" color="text.secondary">
            waiting since {formatAgo(pending.waiting_since)}
          </Typography>
        </Stack>
        {issue && (
          <Typography variant="body2">
            {humanize(issue.state)} issue: {issue.metric} = {issue.value}
            {issue.threshold !== null && ` (threshold ${issue.threshold})`} on {issue.resource}
          </Typography>
        )}
        <Box component="ol" sx={{ m: 0, pl: 3 }} aria-label="Steps">
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
        {canOperate && <DecisionForm planId={plan.plan_id} />}
      </CardContent>
    </Card>
  );
}
