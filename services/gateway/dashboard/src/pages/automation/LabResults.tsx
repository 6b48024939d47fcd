import Alert from '@mui/material/Alert';
import Box from '@mui/material/Box';
import Paper from '@mui/material/Paper';
import Table from '@mui/material/Table';
import TableBody from '@mui/material/TableBody';
import TableCell from '@mui/material/TableCell';
import TableContainer from '@mui/material/TableContainer';
import TableHead from '@mui/material/TableHead';
import TableRow from '@mui/material/TableRow';
import Typography from '@mui/material/Typography';
import type { LabFault, LabReport, LabReportState, LabTotals } from '../../api/types';
import { visuallyHidden } from '../../components/layout';
import { formatDateTime, formatDuration, humanize } from '../../lib/format';

type Count =
  'injected' | 'detected' | 'auto_resolved' | 'escalated' | 'silent' | 'needless_actions' | 'outside_policy';

const COUNTS: [Count, string][] = [
  ['injected', 'Injected'],
  ['detected', 'Detected'],
  ['auto_resolved', 'Auto-resolved'],
  ['escalated', 'Escalated'],
  ['silent', 'Silent'],
  ['needless_actions', 'Needless actions'],
  ['outside_policy', 'Outside policy'],
];

type Expected = LabFault['expected'];
const EXPECTED: Record<Expected, string> = { auto_resolved: 'Auto-resolved', escalated: 'Escalated' };

/** Whether a count says something went wrong: a fault missed, an action not needed or
 * outside policy, or (for one fault) fewer handled as `expected` than injected. */
function isBad(row: LabFault | LabTotals, count: Count, expected: Expected | null): boolean {
  if (count === 'silent' || count === 'needless_actions' || count === 'outside_policy') return row[count] > 0;
  if (count === 'detected') return row.detected < row.injected;
  return count === expected && row[count] < row.injected;
}

function seconds(value: number | null): string {
  return value === null ? '—' : `${value.toFixed(1)} s`;
}

interface RowProps {
  name: string;
  row: LabFault | LabTotals;
  /** How the fault should end; null for the totals. */
  expected: Expected | null;
}

function Row({ name, row, expected }: RowProps) {
  const weight = expected === null ? 600 : undefined;
  return (
    <TableRow>
      <TableCell component="th" scope="row" sx={{ fontWeight: weight }}>
        {name}
      </TableCell>
      <TableCell>{expected && EXPECTED[expected]}</TableCell>
      {COUNTS.map(([count]) => {
        const bad = isBad(row, count, expected);
        return (
          <TableCell
            key={count}
            align="right"
            sx={{ fontWeight: bad ? 700 : weight, color: bad ? 'error.main' : undefined }}
          >
            {row[count]}
            {bad && (
              <Box component="span" sx={visuallyHidden}>
                {' '}
                (not as it should be)
              </Box>
            )}
          </TableCell>
        );
      })}
      <TableCell align="right" sx={{ fontWeight: weight }}>
        {seconds(row.mttr_median_s)}
      </TableCell>
      <TableCell align="right" sx={{ fontWeight: weight }}>
        {seconds(row.mttr_p90_s)}
      </TableCell>
    </TableRow>
  );
}

/** `2026-11-29 10:40:00 (40 min 0 s) · commit 41d8f32 · planner rules-v1 · 3 rounds, seed 7`. */
export function describeRun(report: LabReport): string {
  const took = (Date.parse(report.finished_at) - Date.parse(report.started_at)) / 1000;
  const planner = `planner ${report.planner}${report.lab_trained ? ' (lab-trained)' : ''}`;
  return [
    `${formatDateTime(report.finished_at)} (${formatDuration(took)})`,
    `commit ${report.commit || 'unknown'}`,
    planner,
    `${report.rounds} ${report.rounds === 1 ? 'round' : 'rounds'}, seed ${report.seed}`,
  ].join(' · ');
}

function Report({ report }: { report: LabReport }) {
  const faults = Object.entries(report.faults).sort(([a], [b]) => a.localeCompare(b));
  const { totals } = report;
  const quiet = totals.quiet_issues + totals.quiet_plans + totals.quiet_actions;
  return (
    <Box sx={{ display: 'grid', gap: 1 }}>
      <Typography variant="body2" color="text.secondary">
        Latest run: {describeRun(report)}
      </Typography>
      <TableContainer component={Paper} variant="outlined" tabIndex={0} aria-label="Lab results, scrollable">
        <Table size="small" aria-label="Lab results per fault">
          <TableHead>
            <TableRow>
              <TableCell>Fault</TableCell>
              <TableCell>Expected</TableCell>
              {COUNTS.map(([count, label]) => (
                <TableCell key={count} align="right">
                  {label}
                </TableCell>
              ))}
              <TableCell align="right">MTTR median</TableCell>
              <TableCell align="right">MTTR p90</TableCell>
            </TableRow>
          </TableHead>
          <TableBody>
            {faults.map(([name, fault]) => (
              <Row key={name} name={humanize(name)} row={fault} expected={fault.expected} />
            ))}
            <Row name="Total" row={totals} expected={null} />
          </TableBody>
        </Table>
      </TableContainer>
      <Typography variant="body2" color={quiet > 0 ? 'error' : 'text.secondary'}>
        With no fault injected ({formatDuration(report.quiet_seconds)}): {totals.quiet_issues} issues,{' '}
        {totals.quiet_plans} plans, {totals.quiet_actions} actions.
      </Typography>
    </Box>
  );
}

/** The lab's latest efficacy table, or why there is none to show. */
export function LabResults({ lab }: { lab: LabReportState }) {
  switch (lab.state) {
    case 'ok':
      return lab.report && <Report report={lab.report} />;
    case 'missing':
      return (
        <Typography color="text.secondary">
          No lab run yet: run <code>medbay lab</code>.
        </Typography>
      );
    case 'unconfigured':
      return (
        <Typography color="text.secondary">
          No lab report configured: the gateway’s <code>lab_report</code> option names the file{' '}
          <code>medbay lab</code> writes.
        </Typography>
      );
    case 'invalid':
      return <Alert severity="error">The lab report cannot be shown: {lab.problem}</Alert>;
  }
}
