import Box from '@mui/material/Box';
import Typography from '@mui/material/Typography';
import { usePendingApprovals } from '../../api/queries';
import { PageHeader } from '../../components/PageHeader';
import { QueryStatus } from '../../components/QueryStatus';
import { useCanOperate } from '../../state/session';
import { ApprovalCard } from './ApprovalCard';

/** Plans waiting for a person's decision, oldest first. */
export default function ApprovalsPage() {
  const approvals = usePendingApprovals();
  const canOperate = useCanOperate();
  return (
    <>
      <PageHeader title="Approvals" />
      <Typography color="text.secondary" sx={{ mb: 2 }}>
        The approver rejects a plan still undecided at its deadline.
        {!canOperate && ' Deciding takes an operator token.'}
      </Typography>
      <QueryStatus isPending={approvals.isPending} error={approvals.error} what="pending approvals" />
      {approvals.data?.length === 0 && (
        <Typography color="text.secondary">No plan is waiting for a decision.</Typography>
      )}
      <Box sx={{ display: 'grid', gap: 2 }}>
        {approvals.data?.map((pending) => (
          <ApprovalCard key={pending.plan.plan_id} pending={pending} />
        ))}
      </Box>
    </>
  );
}
