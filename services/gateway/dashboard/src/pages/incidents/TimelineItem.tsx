import Box from '@mui/material/Box';
import Typography from '@mui/material/Typography';
import type { TimelineEntry } from '../../api/types';
import { formatTime } from '../../lib/format';
import {
  AlertDetails,
  ApprovalDetails,
  FinishedDetails,
  IssueDetails,
  PlanDetails,
  ResultDetails,
  type PlanTrace,
} from './TimelineDetails';

const LABELS = {
  'issue.opened': 'Issue opened',
  'issue.updated': 'Issue changed',
  'issue.resolved': 'Issue resolved',
  'plan.created': 'Plan',
  'plan.approval': 'Decision',
  'action.result': 'Step result',
  'plan.finished': 'Plan ended',
  'alert.raised': 'Alert',
} as const;

function Details({ entry, trace }: { entry: TimelineEntry; trace: PlanTrace | null }) {
  const event = entry.event;
  switch (event.type) {
    case 'issue.opened':
    case 'issue.updated':
    case 'issue.resolved':
      return <IssueDetails issue={event} />;
    case 'plan.created':
      return <PlanDetails plan={event} trace={trace} />;
    case 'plan.approval':
      return <ApprovalDetails approval={event} />;
    case 'action.result':
      return <ResultDetails result={event} />;
    case 'plan.finished':
      return <FinishedDetails finished={event} />;
    case 'alert.raised':
      return <AlertDetails alert={event} />;
  }
}

interface TimelineItemProps {
  entry: TimelineEntry;
  /** For a plan: its trace, and where Jaeger shows it, if anywhere. */
  trace: PlanTrace | null;
}

export function TimelineItem({ entry, trace }: TimelineItemProps) {
  return (
    <Box
      component="li"
      data-type={entry.event.type}
      sx={{ position: 'relative', pl: 3, pb: 2, borderLeft: 2, borderColor: 'divider', ml: 1 }}
    >
      <Box
        aria-hidden
        sx={{
          position: 'absolute',
          left: -7,
          top: 4,
          width: 12,
          height: 12,
          borderRadius: '50%',
          bgcolor: 'primary.main',
        }}
      />
      <Typography variant="body2" color="text.secondary" sx={{ mb: 0.5 }}>
        <time dateTime={entry.at}>{formatTime(entry.at)}</time> · {LABELS[entry.event.type]}
      </Typography>
      <Details entry={entry} trace={trace} />
    </Box>
  );
}
