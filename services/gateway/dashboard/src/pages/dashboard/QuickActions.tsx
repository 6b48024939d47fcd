import CleaningServicesIcon from '@mui/icons-material/CleaningServices';
import RestartAltIcon from '@mui/icons-material/RestartAlt';
import StackedLineChartIcon from '@mui/icons-material/StackedLineChart';
import Button from '@mui/material/Button';
import Stack from '@mui/material/Stack';
import { useState } from 'react';
import type { ActionName } from '../../api/types';
import { QuickActionDialog } from './QuickActionDialog';
import { QUICK_ACTIONS, type QuickActionKind } from './quickActions';

const ICONS: Partial<Record<ActionName, JSX.Element>> = {
  restart_service: <RestartAltIcon />,
  scale_up: <StackedLineChartIcon />,
  cleanup_disk: <CleaningServicesIcon />,
};

/** Operators' buttons for asking an action by hand. */
export function QuickActions({ hosts, suggestions }: { hosts: string[]; suggestions: string[] }) {
  const [open, setOpen] = useState<QuickActionKind | null>(null);
  return (
    <>
      <Stack direction="row" sx={{ gap: 1, flexWrap: 'wrap' }} role="group" aria-label="Quick actions">
        {QUICK_ACTIONS.map((kind) => (
          <Button
            key={kind.action}
            variant="outlined"
            startIcon={ICONS[kind.action]}
            disabled={hosts.length === 0}
            onClick={() => setOpen(kind)}
          >
            {kind.label}
          </Button>
        ))}
      </Stack>
      {open && (
        <QuickActionDialog
          kind={open}
          hosts={hosts}
          suggestions={suggestions}
          onClose={() => setOpen(null)}
        />
      )}
    </>
  );
}
