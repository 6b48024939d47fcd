import ExpandMoreIcon from '@mui/icons-material/ExpandMore';
import Accordion from '@mui/material/Accordion';
import AccordionDetails from '@mui/material/AccordionDetails';
import AccordionSummary from '@mui/material/AccordionSummary';
import Box from '@mui/material/Box';
import Chip from '@mui/material/Chip';
import Typography from '@mui/material/Typography';
import type { IncidentSummary } from '../../api/types';
import { PlanStatusChip, SeverityChip } from '../../components/Chips';
import { formatAgo, humanize } from '../../lib/format';
import { KIND_LABELS } from '../../lib/labels';
import { IncidentTimeline } from './IncidentTimeline';

/** One incident's line; expanded, its timeline (loaded only then). */
export function IncidentItem({ incident }: { incident: IncidentSummary }) {
  const summaryId = `incident-${incident.fingerprint}`;
  return (
    <Accordion
      disableGutters
      slotProps={{ heading: { component: 'h2' }, transition: { unmountOnExit: true } }}
      data-fingerprint={incident.fingerprint}
      data-kind={incident.kind}
    >
      <AccordionSummary expandIcon={<ExpandMoreIcon />} id={summaryId} aria-controls={`${summaryId}-details`}>
        <Box sx={{ display: 'flex', flexWrap: 'wrap', alignItems: 'center', gap: 1, width: '100%' }}>
          {incident.severity && <SeverityChip severity={incident.severity} />}
          <Typography component="span" variant="body1" sx={{ fontWeight: 600, flexGrow: 1, minWidth: 200 }}>
            {KIND_LABELS[incident.kind]} on {incident.host}
            {incident.resource && `: ${incident.resource}`}
          </Typography>
          {incident.state !== 'unknown' && (
            <Chip
              size="small"
              label={humanize(incident.state)}
              color={incident.state === 'open' ? 'primary' : 'default'}
              variant={incident.state === 'open' ? 'filled' : 'outlined'}
            />
          )}
          {incident.plan_status && <PlanStatusChip status={incident.plan_status} />}
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
