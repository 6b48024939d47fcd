import Button from '@mui/material/Button';
import Dialog from '@mui/material/Dialog';
import DialogActions from '@mui/material/DialogActions';
import DialogContent from '@mui/material/DialogContent';
import DialogContentText from '@mui/material/DialogContentText';
import DialogTitle from '@mui/material/DialogTitle';
import MenuItem from '@mui/material/MenuItem';
import TextField from '@mui/material/TextField';
import { useState, type FormEvent } from 'react';
import { useQuickAction } from '../../api/mutations';
import { useNotice } from '../../state/notice';
import type { QuickActionKind } from './quickActions';

interface QuickActionDialogProps {
  kind: QuickActionKind;
  hosts: string[];
  /** Names worth suggesting as targets (the services the collector checks). */
  suggestions: string[];
  onClose: () => void;
}

/** Asks for an action by hand; the planner plans it under the usual approval rules. */
export function QuickActionDialog({ kind, hosts, suggestions, onClose }: QuickActionDialogProps) {
  const [host, setHost] = useState(hosts[0] ?? '');
  const [target, setTarget] = useState('');
  const [replicas, setReplicas] = useState('1');
  const [reason, setReason] = useState('');
  const request = useQuickAction();
  const show = useNotice((state) => state.show);

  const submit = (event: FormEvent) => {
    event.preventDefault();
    request.mutate(
      {
        host,
        action: kind.action,
        target: target.trim(),
        params: kind.replicas ? { replicas: Number(replicas) } : {},
        reason: reason.trim(),
      },
      {
        onSuccess: (accepted) => {
          show(
            `${kind.label} of ${accepted.request.target} on ${accepted.request.host} requested: ${accepted.note}.`,
          );
          onClose();
        },
      },
    );
  };

  const listId = `targets-${kind.action}`;
  return (
    <Dialog open onClose={onClose} fullWidth maxWidth="sm" aria-labelledby="quick-action-title">
      <form onSubmit={submit}>
        <DialogTitle id="quick-action-title">{kind.label}</DialogTitle>
        <DialogContent sx={{ display: 'grid', gap: 2 }}>
          <DialogContentText>
            The planner turns the request into a plan; it runs at once or waits for approval, by the usual
            rules.
          </DialogContentText>
          {request.error && <DialogContentText color="error">{request.error.message}</DialogContentText>}
          <TextField select required label="Host" value={host} onChange={(e) => setHost(e.target.value)}>
            {hosts.map((name) => (
              <MenuItem key={name} value={name}>
                {name}
              </MenuItem>
            ))}
          </TextField>
          <TextField
            required
            autoFocus
            label="Target"
            value={target}
            onChange={(e) => setTarget(e.target.value)}
            helperText={kind.targetHint}
            slotProps={{ htmlInput: { list: listId, maxLength: 300 } }}
          />
          <datalist id={listId}>
            {suggestions.map((name) => (
              <option key={name} value={name} />
            ))}
          </datalist>
          {kind.replicas && (
            <TextField
              required
              type="number"
              label="Replicas to add"
              value={replicas}
              onChange={(e) => setReplicas(e.target.value)}
              slotProps={{ htmlInput: { min: 1, max: 100, step: 1 } }}
            />
          )}
          <TextField
            label="Reason (optional)"
            value={reason}
            onChange={(e) => setReason(e.target.value)}
            multiline
            minRows={2}
            slotProps={{ htmlInput: { maxLength: 2000 } }}
          />
        </DialogContent>
        <DialogActions>
          <Button onClick={onClose}>Cancel</Button>
          <Button type="submit" variant="contained" disabled={request.isPending || !host || !target.trim()}>
            Request {kind.label.toLowerCase()}
          </Button>
        </DialogActions>
      </form>
    </Dialog>
  );
}
