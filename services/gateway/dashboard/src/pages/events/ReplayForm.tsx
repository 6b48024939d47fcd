import Alert from '@mui/material/Alert';
import Box from '@mui/material/Box';
import Button from '@mui/material/Button';
import Card from '@mui/material/Card';
import CardContent from '@mui/material/CardContent';
import MenuItem from '@mui/material/MenuItem';
import TextField from '@mui/material/TextField';
import Typography from '@mui/material/Typography';
import { useState, type FormEvent } from 'react';
import { useReplay } from '../../api/mutations';
import { STREAMS, type StreamName } from '../../api/types';
import { formatInputDateTime, parseInputDateTime } from '../../lib/format';

/** Local time, in the zone the header names. */
const TIME_HELP = 'YYYY-MM-DD HH:MM, 24 h';

/**
 * Re-publishes a recorded time range of a stream under a sandbox subject prefix,
 * outside every stream: a debugging subscriber sees the past unfold again while
 * the live pipeline sees nothing.
 */
export function ReplayForm() {
  const [stream, setStream] = useState<StreamName>('ISSUES');
  const [since, setSince] = useState(() => formatInputDateTime(Date.now() - 15 * 60_000));
  const [until, setUntil] = useState('');
  const [subject, setSubject] = useState('');
  const [prefix, setPrefix] = useState('replay');
  const replay = useReplay();

  const sinceAt = parseInputDateTime(since);
  const untilAt = until.trim() ? parseInputDateTime(until) : null;
  const untilWrong = until.trim() !== '' && untilAt === null;
  const submit = (event: FormEvent) => {
    event.preventDefault();
    if (sinceAt === null || untilWrong) return;
    replay.mutate({
      stream,
      since: sinceAt.toISOString(),
      until: untilAt ? untilAt.toISOString() : null,
      subject: subject.trim() || null,
      prefix: prefix.trim(),
    });
  };

  const done = replay.data;
  return (
    <Card>
      <CardContent component="form" onSubmit={submit} sx={{ display: 'grid', gap: 2 }}>
        <Typography variant="body2" color="text.secondary">
          Re-publishes what a stream recorded in a time range on <code>PREFIX.&lt;subject&gt;</code>, outside
          every stream: subscribe there (e.g. <code>nats sub &apos;{prefix || 'PREFIX'}.&gt;&apos;</code>) to
          watch it again; the services do not see it.
        </Typography>
        <Box
          sx={{
            display: 'grid',
            gap: 2,
            gridTemplateColumns: 'repeat(auto-fill, minmax(min(100%, 220px), 1fr))',
          }}
        >
          <TextField
            select
            label="Stream"
            value={stream}
            onChange={(e) => setStream(e.target.value as StreamName)}
          >
            {STREAMS.map((name) => (
              <MenuItem key={name} value={name}>
                {name}
              </MenuItem>
            ))}
          </TextField>
          <TextField
            required
            label="From"
            value={since}
            onChange={(e) => setSince(e.target.value)}
            error={sinceAt === null}
            helperText={sinceAt === null ? `Not a time: ${TIME_HELP}` : TIME_HELP}
            slotProps={{ htmlInput: { inputMode: 'numeric', spellCheck: false } }}
          />
          <TextField
            label="Until (empty: now)"
            value={until}
            onChange={(e) => setUntil(e.target.value)}
            error={untilWrong}
            helperText={untilWrong ? `Not a time: ${TIME_HELP}` : TIME_HELP}
            slotProps={{ htmlInput: { inputMode: 'numeric', spellCheck: false } }}
          />
          <TextField
            label="Subject pattern (optional)"
            value={subject}
            onChange={(e) => setSubject(e.target.value)}
            placeholder="medbay.issues.>"
          />
          <TextField required label="Prefix" value={prefix} onChange={(e) => setPrefix(e.target.value)} />
        </Box>
        {replay.error && <Alert severity="error">{replay.error.message}</Alert>}
        {done && (
          <Alert severity="success">
            Re-published {done.count} events of {done.stream} on {done.prefix}.&lt;subject&gt;
            {done.truncated && ' (stopped at the gateway’s limit)'}.
          </Alert>
        )}
        <Box>
          <Button
            type="submit"
            variant="contained"
            disabled={replay.isPending || sinceAt === null || untilWrong || !prefix.trim()}
          >
            Replay
          </Button>
        </Box>
      </CardContent>
    </Card>
  );
}
