import MenuItem from '@mui/material/MenuItem';
import Stack from '@mui/material/Stack';
import TextField from '@mui/material/TextField';
import { EVENT_TYPES } from '../../api/types';
import type { EventFilter, TypeChoice } from './eventFilter';

interface EventFiltersProps {
  filter: EventFilter;
  hosts: string[];
  onChange: (filter: EventFilter) => void;
}

export function EventFilters({ filter, hosts, onChange }: EventFiltersProps) {
  return (
    <Stack direction={{ xs: 'column', sm: 'row' }} sx={{ gap: 2, mb: 2 }}>
      <TextField
        select
        size="small"
        label="Type"
        value={filter.type}
        onChange={(event) => onChange({ ...filter, type: event.target.value as TypeChoice })}
        sx={{ minWidth: 220 }}
      >
        <MenuItem value="no-metrics">All but metric batches</MenuItem>
        <MenuItem value="everything">All</MenuItem>
        {EVENT_TYPES.map((type) => (
          <MenuItem key={type} value={type}>
            {type}
          </MenuItem>
        ))}
      </TextField>
      <TextField
        select
        size="small"
        label="Host"
        value={filter.host}
        onChange={(event) => onChange({ ...filter, host: event.target.value })}
        slotProps={{ inputLabel: { shrink: true }, select: { displayEmpty: true } }}
        sx={{ minWidth: 220 }}
      >
        <MenuItem value="">Every host</MenuItem>
        {hosts.map((host) => (
          <MenuItem key={host} value={host}>
            {host}
          </MenuItem>
        ))}
      </TextField>
    </Stack>
  );
}
