import OpenInNewIcon from '@mui/icons-material/OpenInNew';
import SearchIcon from '@mui/icons-material/Search';
import Box from '@mui/material/Box';
import Button from '@mui/material/Button';
import Card from '@mui/material/Card';
import CardContent from '@mui/material/CardContent';
import Link from '@mui/material/Link';
import TextField from '@mui/material/TextField';
import Typography from '@mui/material/Typography';
import { useState, type FormEvent } from 'react';
import { useJaegerUrl, useTrace } from '../../api/queries';
import type { TraceFindings } from '../../api/types';
import { IncidentStatusChip } from '../../components/Chips';
import { visuallyHidden } from '../../components/layout';
import { QueryStatus } from '../../components/QueryStatus';
import { formatDateTime } from '../../lib/format';
import { parseTraceId, traceUrl } from '../../lib/jaeger';
import { KIND_LABELS } from '../../lib/labels';

function NewTab() {
  return (
    <>
      <OpenInNewIcon fontSize="inherit" sx={{ ml: 0.5 }} />
      <Box component="span" sx={visuallyHidden}>
        (opens in a new tab)
      </Box>
    </>
  );
}

/** What Medbay holds of a trace: its incidents and their events published in it. */
function Findings({ findings }: { findings: TraceFindings }) {
  const nothing = findings.incidents.length === 0 && findings.events.length === 0;
  return (
    <Card variant="outlined" sx={{ mt: 2 }} data-trace-id={findings.trace_id}>
      <CardContent sx={{ display: 'grid', gap: 1 }}>
        <Typography variant="h3" component="h3" sx={{ wordBreak: 'break-all' }}>
          Trace {findings.trace_id}
        </Typography>
        {findings.jaeger_url !== null ? (
          <Link href={findings.jaeger_url} target="_blank" rel="noreferrer" sx={{ width: 'fit-content' }}>
            Open trace {findings.trace_id.slice(0, 8)} in Jaeger
            <NewTab />
          </Link>
        ) : (
          <Typography variant="body2" color="text.secondary">
            No Jaeger UI is configured (<code>jaeger_url</code> in the gateway&apos;s config), so its spans
            cannot be opened from here.
          </Typography>
        )}
        {nothing ? (
          <Typography>
            Medbay holds nothing of this trace: no issue, plan, decision or step it keeps was published in it.
          </Typography>
        ) : (
          <>
            <Typography variant="body2" color="text.secondary">
              What Medbay holds of it:
            </Typography>
            <Box component="ul" aria-label="Incidents in the trace" sx={{ m: 0, pl: 3 }}>
              {findings.incidents.map((incident) => (
                <Box component="li" key={incident.fingerprint} sx={{ mb: 0.5 }}>
                  <Typography component="span" sx={{ fontWeight: 600, mr: 1 }}>
                    {KIND_LABELS[incident.kind]} on {incident.host}
                    {incident.resource && `: ${incident.resource}`}
                  </Typography>
                  <IncidentStatusChip status={incident.status} />
                </Box>
              ))}
            </Box>
            <Box component="ol" aria-label="Events in the trace" sx={{ m: 0, pl: 3 }}>
              {findings.events.map((event) => (
                <Typography
                  component="li"
                  variant="body2"
                  key={event.event.event_id}
                  data-type={event.event.type}
                >
                  <time dateTime={event.at}>{formatDateTime(event.at)}</time> · {event.summary}
                </Typography>
              ))}
            </Box>
          </>
        )}
      </CardContent>
    </Card>
  );
}

/**
 * Find a trace by its id: what Medbay holds of it (the incidents, plans, decisions and
 * steps published in it), and, when the gateway names a Jaeger UI, a link to open it
 * there. Without one there is no link at all.
 */
export function TraceSearch() {
  const jaegerUrl = useJaegerUrl();
  const [text, setText] = useState('');
  const [problem, setProblem] = useState<string | null>(null);
  const [wanted, setWanted] = useState<string | null>(null);
  const trace = useTrace(wanted);
  const parsed = parseTraceId(text);
  const typed = 'traceId' in parsed ? parsed.traceId : null;
  const find = (event: FormEvent) => {
    event.preventDefault();
    if ('problem' in parsed) {
      setProblem(parsed.problem);
      return;
    }
    setProblem(null);
    setWanted(parsed.traceId);
  };
  return (
    <Box>
      <Box
        component="form"
        role="search"
        aria-label="Find a trace"
        onSubmit={find}
        noValidate
        sx={{ display: 'flex', gap: 1, flexWrap: 'wrap', alignItems: 'flex-start' }}
      >
        <TextField
          size="small"
          label="Trace id"
          value={text}
          onChange={(event) => {
            setText(event.target.value);
            setProblem(null);
          }}
          error={problem !== null}
          helperText={problem ?? '32 hexadecimal digits, e.g. from a log line or a traceparent header'}
          slotProps={{ htmlInput: { spellCheck: false, autoComplete: 'off', maxLength: 64 } }}
          sx={{ flexGrow: 1, minWidth: 260, maxWidth: 520, fontFamily: 'monospace' }}
        />
        <Button type="submit" variant="contained" startIcon={<SearchIcon />}>
          Find trace
        </Button>
        {jaegerUrl !== null &&
          (typed !== null ? (
            <Button variant="outlined" href={traceUrl(jaegerUrl, typed)} target="_blank" rel="noreferrer">
              Open in Jaeger
              <NewTab />
            </Button>
          ) : (
            <Button variant="outlined" disabled>
              Open in Jaeger
            </Button>
          ))}
      </Box>
      {wanted !== null && <QueryStatus isPending={trace.isPending} error={trace.error} what="trace" />}
      {trace.data && <Findings findings={trace.data} />}
    </Box>
  );
}
