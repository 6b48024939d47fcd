import ToggleButton from '@mui/material/ToggleButton';
import ToggleButtonGroup from '@mui/material/ToggleButtonGroup';
import Typography from '@mui/material/Typography';
import { useState } from 'react';
import { useIncidents, type IncidentFilter } from '../../api/queries';
import { PageHeader } from '../../components/PageHeader';
import { QueryStatus } from '../../components/QueryStatus';
import { IncidentItem } from './IncidentItem';

/** Open and recent incidents; each opens into its timeline. */
export default function IncidentsPage() {
  const [filter, setFilter] = useState<IncidentFilter>('all');
  const incidents = useIncidents(filter);
  return (
    <>
      <PageHeader title="Incidents">
        <ToggleButtonGroup
          exclusive
          size="small"
          value={filter}
          onChange={(_, value: IncidentFilter | null) => value && setFilter(value)}
          aria-label="Which incidents"
        >
          <ToggleButton value="open">Open</ToggleButton>
          <ToggleButton value="all">Open and recent</ToggleButton>
        </ToggleButtonGroup>
      </PageHeader>
      <QueryStatus isPending={incidents.isPending} error={incidents.error} what="incidents" />
      {incidents.data?.length === 0 && (
        <Typography color="text.secondary">
          {filter === 'open' ? 'No open incidents.' : 'No incidents in the gateway’s history.'}
        </Typography>
      )}
      {incidents.data?.map((incident) => (
        <IncidentItem key={incident.fingerprint} incident={incident} />
      ))}
    </>
  );
}
