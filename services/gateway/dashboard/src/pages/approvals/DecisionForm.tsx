import CheckIcon from '@mui/icons-material/Check';
import CloseIcon from '@mui/icons-material/Close';
import Alert from '@mui/material/Alert';
import Button from '@mui/material/Button';
import Stack from '@mui/material/Stack';
import TextField from '@mui/material/TextField';
import { useState } from 'react';
import { useDecision } from '../../api/mutations';
import { shortId } from '../../lib/format';
import { useNotice } from '../../state/notice';

/** Approve or reject a plan, with an optional reason (operators only). */
export function DecisionForm({ planId }: { planId: string }) {
  const [reason, setReason] = useState('');
  const decide = useDecision();
  const show = useNotice((state) => state.show);
  const send = (decision: 'approve' | 'reject') =>
    decide.mutate(
      { planId, decision, reason: reason.trim() },
      {
        onSuccess: (response) =>
          show(
            `Plan ${shortId(planId)} ${decision === 'approve' ? 'approved' : 'rejected'}: ${response.note}.`,
          ),
      },
    );
  return (
    <Stack sx={{ gap: 1 }}>
      {decide.error && <Alert severity="error">{decide.error.message}</Alert>}
      <TextField
        size="small"
        label="Reason (optional)"
        value={reason}
        onChange={(event) => setReason(event.target.value)}
        slotProps={{ htmlInput: { maxLength: 2000 } }}
      />
      <Stack direction="row" sx={{ gap: 1, flexWrap: 'wrap' }}>
        <Button
          variant="contained"
          color="success"
          startIcon={<CheckIcon />}
          disabled={decide.isPending}
          onClick={() => send('approve')}
          aria-label={`Approve plan ${shortId(planId)}`}
        >
          Approve
        </Button>
        <Button
          variant="outlined"
          color="error"
          startIcon={<CloseIcon />}
          disabled={decide.isPending}
          onClick={() => send('reject')}
          aria-label={`Reject plan ${shortId(planId)}`}
        >
          Reject
        </Button>
      </Stack>
    </Stack>
  );
}
