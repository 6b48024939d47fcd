import ExpandMoreIcon from '@mui/icons-material/ExpandMore';
import Accordion from '@mui/material/Accordion';
import AccordionDetails from '@mui/material/AccordionDetails';
import AccordionSummary from '@mui/material/AccordionSummary';
import Box from '@mui/material/Box';
import Chip from '@mui/material/Chip';
import Typography from '@mui/material/Typography';
import type { IncidentSummary } from '../../api/types';
import { IncidentStatusChip, SeverityChip } from '../../components/Chips';
import { formatAgo, humanize } from '../../lib/format';
import { askedBy, KIND_LABELS, quickActionTitle } from '../../lib/labels';
import { IncidentTimeline } from './IncidentTimeline';

/** One incident's line (what is wrong, and what was done about it); expanded, its
 * episodes (loaded only then). */
export function IncidentItem({
  incident,
  heading = 'h2',
}: {
  incident: IncidentSummary;
  /** The heading level of its line: h2 on a page of incidents, h3 within a section. */
  heading?: 'h2' | 'h3';
}) {
  const summaryId = `incident-${incident.fingerprint}`;
  const quick = incident.quick_action;
  const recurrences = incident.recurrences;
  return (
    <Accordion
      disableGutters
      slotProps={{ heading: { component: heading }, transition: { unmountOnExit: true } }}
      data-fingerprint={incident.fingerprint}
      data-kind={incident.kind}
    >
      <AccordionSummary expandIcon={<ExpandMoreIcon />} id={summaryId} aria-controls={`${summaryId}-details`}>
        <Box sx={{ display: 'flex', flexWrap: 'wrap', alignItems: 'center', gap: 1, width: '100%' }}>
          {incident.severity && <SeverityChip severity={incident.severity} />}
          <Typography component="span" variant="body1" sx={{ fontWeight: 600, flexGrow: 1, minWidth: 200 }}>
            {quick ? (
              quickActionTitle(quick, incident.host)
            ) : (
              <>
                {KIND_LABELS[incident.kind]} on {incident.host}
                {incident.resource && `: ${incident.resource}`}
              </>
            )}
            {quick && askedBy(quick) && (
              <Typography component="span" variant="body2" color="text.secondary" sx={{ display: 'block' }}>
                {askedBy(quick)}
              </Typography>
            )}
            {incident.detail && (
              <Typography component="span" variant="body2" color="text.secondary" sx={{ display: 'block' }}>
                {incident.detail}
              </Typography>
            )}
          </Typography>
          {recurrences > 0 && (
            <Chip
              size="small"
              variant="outlined"
              color="warning"
              label={`recurred ${recurrences} ${recurrences === 1 ? 'time' : 'times'}`}
            />
          )}
          {incident.state !== 'unknown' && (
            <Chip
              size="small"
              label={humanize(incident.state)}
              color={incident.state === 'open' ? 'primary' : 'default'}
              variant={incident.state === 'open' ? 'filled' : 'outlined'}
            />
          )}
          <IncidentStatusChip status={incident.status} />
          <Typography component="span" variant="body2" color="text.secondary">
            {formatAgo(incident.last_activity)}
          </Typography>
        </Box>
      </AccordionSummary>
      <AccordionDetails>
        <IncidentTimeline fingerprint={incident.fingerprint} />
      </AccordionDetails>
    </Accordion>
  );
}
