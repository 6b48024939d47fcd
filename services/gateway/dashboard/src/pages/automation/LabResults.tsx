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
import type {
  LabFault,
  LabModel,
  LabReport,
  LabReportState,
  LabRun,
  LabTotals,
  LabTraining,
} from '../../api/types';
import { visuallyHidden } from '../../components/layout';
import { formatDateTime, formatDuration, formatPercent, humanize } from '../../lib/format';

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
  /** Whether to show the fixes tried (reports from before they were counted have none). */
  steps: boolean;
}

function Row({ name, row, expected, steps }: RowProps) {
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
      {steps && (
        <TableCell align="right" sx={{ fontWeight: weight }}>
          {row.steps ?? '—'}
        </TableCell>
      )}
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
export function describeRun(report: LabRun): string {
  const took = (Date.parse(report.finished_at) - Date.parse(report.started_at)) / 1000;
  const planner = `planner ${report.planner}${report.lab_trained ? ' (lab-trained)' : ''}`;
  return [
    `${formatDateTime(report.finished_at)} (${formatDuration(took)})`,
    `commit ${report.commit || 'unknown'}`,
    planner,
    `${report.rounds} ${report.rounds === 1 ? 'round' : 'rounds'}, seed ${report.seed}`,
  ].join(' · ');
}

/** `3/4`; `—` when a report from before the count has none. */
function ratio(count: number | null, of: number | null): string {
  return count === null || of === null ? '—' : `${count}/${of}`;
}

function figure(value: number | null): string {
  return value === null ? '—' : String(value);
}

/** The rows of the comparison: what each shows of a run's totals. */
const COMPARED: [string, (totals: LabTotals) => string][] = [
  ['As expected', (t) => ratio(t.as_expected, t.injected)],
  ['Fixable auto-resolved', (t) => ratio(t.fixable_auto_resolved, t.fixable)],
  ['Escalated', (t) => figure(t.escalated)],
  ['Silent', (t) => figure(t.silent)],
  ['Fixes tried (steps)', (t) => figure(t.steps)],
  ['Needless actions', (t) => figure(t.needless_actions)],
  ['Outside policy', (t) => figure(t.outside_policy)],
  [
    'MTTR p50 / p90',
    (t) => (t.mttr_median_s === null ? '—' : `${seconds(t.mttr_median_s)} / ${seconds(t.mttr_p90_s)}`),
  ],
];

/** How the model was trained (`medbay lab --train`) and how a planner adopts it. */
function describeTraining(training: LabTraining | null, model: LabModel): string {
  const accuracy = model.validation_accuracy === null ? '—' : formatPercent(model.validation_accuracy * 100);
  let faults = 'lab faults';
  if (training !== null) {
    const rounds = `${training.rounds} training ${training.rounds === 1 ? 'round' : 'rounds'}`;
    faults = `${training.totals.injected} faults in ${rounds} (seed ${training.seed})`;
  }
  return (
    `Trained on ${faults}; outcomes learnt from: ${model.success} successes, ${model.failure} failures; ` +
    `validation accuracy ${accuracy}.`
  );
}

/** `medbay lab --train`: the trained model and the rule table on the same held-out faults,
 * side by side, and how the model was trained; or why no model was trained. */
function Comparison({ report }: { report: LabReport }) {
  const { model, rule_table: rules } = report;
  if (model === null) return null;
  if (model.file === null) {
    return (
      <Typography variant="body2" color="text.secondary">
        No model was trained: {model.why_none ?? 'the report does not say why'}.
      </Typography>
    );
  }
  if (rules === null || model.version === null) return null;
  const runs: [string, LabRun][] = [
    ['Rule table', rules],
    [`Trained model ${model.version}`, report],
  ];
  return (
    <Box sx={{ display: 'grid', gap: 1, mt: 1 }}>
      <Typography variant="h3" component="h3">
        Trained model against the rule table on held-out faults
      </Typography>
      <TableContainer
        component={Paper}
        variant="outlined"
        tabIndex={0}
        aria-label="Lab: trained model vs rule table, scrollable"
        sx={{ width: 'fit-content', maxWidth: '100%' }}
      >
        <Table size="small" aria-label="Lab: trained model vs rule table">
          <TableHead>
            <TableRow>
              <TableCell>Held-out faults</TableCell>
              {runs.map(([name]) => (
                <TableCell key={name} align="right">
                  {name}
                </TableCell>
              ))}
            </TableRow>
          </TableHead>
          <TableBody>
            {COMPARED.map(([name, shown]) => (
              <TableRow key={name}>
                <TableCell component="th" scope="row">
                  {name}
                </TableCell>
                {runs.map(([run, { totals }]) => (
                  <TableCell key={run} align="right">
                    {shown(totals)}
                  </TableCell>
                ))}
              </TableRow>
            ))}
          </TableBody>
        </Table>
      </TableContainer>
      <Typography variant="body2" color="text.secondary">
        {describeTraining(report.training, model)} A planner adopts it with{' '}
        <code>initial_model: {model.file}</code>.
      </Typography>
    </Box>
  );
}

function Report({ report }: { report: LabReport }) {
  const faults = Object.entries(report.faults).sort(([a], [b]) => a.localeCompare(b));
  const { totals } = report;
  const steps = totals.steps !== null;
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
              {steps && <TableCell align="right">Fixes tried</TableCell>}
              <TableCell align="right">MTTR median</TableCell>
              <TableCell align="right">MTTR p90</TableCell>
            </TableRow>
          </TableHead>
          <TableBody>
            {faults.map(([name, fault]) => (
              <Row key={name} name={humanize(name)} row={fault} expected={fault.expected} steps={steps} />
            ))}
            <Row name="Total" row={totals} expected={null} steps={steps} />
          </TableBody>
        </Table>
      </TableContainer>
      <Typography variant="body2" color={quiet > 0 ? 'error' : 'text.secondary'}>
        With no fault injected ({formatDuration(report.quiet_seconds)}): {totals.quiet_issues} issues,{' '}
        {totals.quiet_plans} plans, {totals.quiet_actions} actions.
      </Typography>
      <Comparison report={report} />
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
