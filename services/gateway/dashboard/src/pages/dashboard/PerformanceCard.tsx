import Box from '@mui/material/Box';
import Card from '@mui/material/Card';
import CardContent from '@mui/material/CardContent';
import MenuItem from '@mui/material/MenuItem';
import TextField from '@mui/material/TextField';
import { useState } from 'react';
import { usePerformance } from '../../api/queries';
import { QueryStatus } from '../../components/QueryStatus';
import { PerformanceChart } from './PerformanceChart';

/** The performance chart with a choice of host (the first one until chosen). */
export function PerformanceCard({ hosts }: { hosts: string[] }) {
  const [chosen, setChosen] = useState<string | null>(null);
  const host = chosen !== null && hosts.includes(chosen) ? chosen : (hosts[0] ?? null);
  const performance = usePerformance(host);
  return (
    <Card>
      <CardContent>
        {hosts.length > 1 && (
          <Box sx={{ mb: 2, maxWidth: 280 }}>
            <TextField
              select
              fullWidth
              size="small"
              label="Host"
              value={host ?? ''}
              onChange={(event) => setChosen(event.target.value)}
            >
              {hosts.map((name) => (
                <MenuItem key={name} value={name}>
                  {name}
                </MenuItem>
              ))}
            </TextField>
          </Box>
        )}
        <QueryStatus
          isPending={host !== null && performance.isPending}
          error={performance.error}
          what="performance history"
        />
        {host !== null && performance.data && <PerformanceChart host={host} points={performance.data} />}
      </CardContent>
    </Card>
  );
}
