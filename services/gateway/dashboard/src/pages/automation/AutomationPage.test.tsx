import { screen, waitFor, within } from '@testing-library/react';
import userEvent from '@testing-library/user-event';
import { describe, expect, it } from 'vitest';
import type { LabFault, LabModel, LabReport, LabRun, LabTotals, PlannerModel } from '../../api/types';
import { NOW } from '../../test/fixtures';
import { mockApi, renderWithProviders } from '../../test/render';
import AutomationPage from './AutomationPage';

const MODEL: PlannerModel = {
  version: 'forest-20260110-1200',
  trained_on: 'lab',
  validation_accuracy: 0.873,
  trained_at: NOW,
  training_outcomes: 120,
  holdout_outcomes: 30,
  candidates: {},
  success_rates: {
    restart_service: { successes: 9, failures: 1, rate: 0.9 },
    scale_up: { successes: 1, failures: 3, rate: 0.25 },
  },
  success_rates_by_kind: {},
};

const BREAKER = {
  target: 'demo-web',
  opened_at: NOW,
  reason: '3 actions in 10 min',
  actions: [['restart_service', NOW]],
};

const FAULT: LabFault = {
  expected: 'auto_resolved',
  injected: 3,
  detected: 3,
  auto_resolved: 3,
  escalated: 0,
  silent: 0,
  needless_actions: 0,
  outside_policy: 0,
  mttr_median_s: 9.1,
  mttr_p90_s: 12,
  as_expected: null, // a report from before these were counted
  steps: null,
};

const LAB: LabReport = {
  schema: 'medbay.lab/1',
  started_at: '2026-01-10T11:20:00Z',
  finished_at: NOW,
  commit: '41d8f32',
  seed: 7,
  rounds: 3,
  quiet_seconds: 120,
  planner: 'rules-v1',
  lab_trained: false,
  totals: {
    ...FAULT,
    injected: 6,
    detected: 5,
    auto_resolved: 4,
    escalated: 1,
    silent: 1,
    mttr_p90_s: 31,
    fixable: null,
    fixable_auto_resolved: null,
    quiet_issues: 0,
    quiet_plans: 0,
    quiet_actions: 0,
  },
  faults: {
    service_killed: FAULT,
    disk_filled: { ...FAULT, auto_resolved: 1, escalated: 1, silent: 1, detected: 2, mttr_median_s: null },
  },
  model: null,
  training: null,
  rule_table: null,
};

/** The figures of a `medbay lab --train` run: four faults, one of each kind. */
function totals(changes: Partial<LabTotals>): LabTotals {
  return {
    injected: 4,
    detected: 4,
    auto_resolved: 4,
    escalated: 0,
    silent: 0,
    as_expected: 4,
    needless_actions: 0,
    outside_policy: 0,
    mttr_median_s: 2,
    mttr_p90_s: 4.9,
    steps: 4,
    fixable: 4,
    fixable_auto_resolved: 4,
    quiet_issues: 0,
    quiet_plans: 0,
    quiet_actions: 0,
    ...changes,
  };
}

const HELD_OUT: LabFault = { ...FAULT, injected: 1, detected: 1, auto_resolved: 1, as_expected: 1, steps: 1 };

const RULE_TABLE: LabRun = {
  ...LAB,
  seed: 1,
  rounds: 1,
  planner: 'rules-v1',
  lab_trained: true,
  totals: totals({
    auto_resolved: 3,
    escalated: 1,
    as_expected: 3,
    fixable_auto_resolved: 3,
    steps: 5,
    mttr_median_s: 2.2,
    mttr_p90_s: 3.6,
  }),
  faults: { disk_filling: { ...HELD_OUT, auto_resolved: 0, escalated: 1, as_expected: 0, steps: 2 } },
};

const LAB_MODEL: LabModel = {
  file: '/data/lab/model.zip',
  version: 'rf-20261130-20',
  trained_on: 'lab',
  validation_accuracy: 0.6,
  trained_outcomes: 20,
  success: 20,
  failure: 6,
  why_none: null,
  corpus: { file: '/data/lab/outcomes.json', outcomes: 26 },
};

/** `medbay lab --train`: the trained model's held-out run, the rule table's beside it. */
const TRAINED: LabReport = {
  ...RULE_TABLE,
  planner: 'rf-20261130-20, rules-v1',
  totals: totals({}),
  faults: { disk_filling: HELD_OUT, log_flood: { ...HELD_OUT, steps: 0, mttr_median_s: null } },
  model: LAB_MODEL,
  training: {
    seed: 1001,
    rounds: 5,
    planner: 'rf-20261130-20, rules-v1',
    totals: totals({ injected: 20, auto_resolved: 18, escalated: 2, as_expected: 18, steps: 24 }),
  },
  rule_table: RULE_TABLE,
};

const COMPARISON = 'Lab: trained model vs rule table';

const lab = (state: string, more = {}) => ({ state, problem: null, report: null, ...more });

describe('AutomationPage', () => {
  it("shows the planner's model and each action's success rate", async () => {
    mockApi({ 'api/model': MODEL, 'api/breakers': [], 'api/lab': lab('missing') });
    renderWithProviders(<AutomationPage />, 'viewer');
    expect(await screen.findByText('forest-20260110-1200')).toBeInTheDocument();
    expect(screen.getByText('Learned from').nextSibling).toHaveTextContent('Lab runs');
    expect(screen.getByText('87.3 %')).toBeInTheDocument();
    expect(screen.getByText('120 / 30')).toBeInTheDocument();
    const table = screen.getByRole('table', { name: 'Success rate per action' });
    expect(within(table).getByRole('progressbar', { name: 'Restart service success rate' })).toHaveAttribute(
      'aria-valuenow',
      '90',
    );
    expect(within(table).getByText('25 %')).toBeInTheDocument();
    expect(await screen.findByText(/Every breaker is closed/)).toBeInTheDocument();
  });

  it('resets an open breaker for operators', async () => {
    let open = [BREAKER];
    const calls = mockApi({
      'api/model': MODEL,
      'api/breakers': () => ({ status: 200, body: open }),
      'api/breakers/demo-web/reset': () => {
        open = [];
        return { status: 200, body: { reset: {} } };
      },
    });
    renderWithProviders(<AutomationPage />);
    const user = userEvent.setup();
    await user.click(await screen.findByRole('button', { name: 'Reset the breaker for demo-web' }));
    await waitFor(() => expect(screen.getByText(/Every breaker is closed/)).toBeInTheDocument());
    expect(calls.some((c) => c.method === 'POST' && c.path === 'api/breakers/demo-web/reset')).toBe(true);
  });

  it('shows viewers the breakers without a reset', async () => {
    mockApi({ 'api/model': MODEL, 'api/breakers': [BREAKER] });
    renderWithProviders(<AutomationPage />, 'viewer');
    expect(await screen.findByRole('table', { name: 'Open breakers' })).toBeInTheDocument();
    expect(screen.queryByRole('button', { name: /Reset/ })).not.toBeInTheDocument();
  });
});

describe('AutomationPage, the lab', () => {
  it("shows the lab's latest run: each fault, the totals, its date and commit", async () => {
    mockApi({ 'api/model': MODEL, 'api/breakers': [], 'api/lab': lab('ok', { report: LAB }) });
    renderWithProviders(<AutomationPage />, 'viewer');
    const table = await screen.findByRole('table', { name: 'Lab results per fault' });
    const rows = within(table).getAllByRole('row');
    const cells = (row: HTMLElement) =>
      within(row)
        .getAllByRole('cell')
        .map((c) => c.textContent);
    expect(rows.map((r) => within(r).queryByRole('rowheader')?.textContent)).toEqual([
      undefined, // the header
      'Disk filled',
      'Service killed',
      'Total',
    ]);
    const [, disk, killed, total] = rows as [HTMLElement, HTMLElement, HTMLElement, HTMLElement];
    expect(cells(killed)).toEqual(['Auto-resolved', '3', '3', '3', '0', '0', '0', '0', '9.1 s', '12.0 s']);
    // what did not go as it should: said to screen readers too, not by colour alone
    const bad = (n: number) => `${n} (not as it should be)`;
    expect(cells(total)).toEqual(['', '6', bad(5), '4', '1', bad(1), '0', '0', '9.1 s', '31.0 s']);
    expect(cells(disk)).toEqual(['Auto-resolved', '3', bad(2), bad(1), '1', bad(1), '0', '0', '—', '12.0 s']);
    expect(
      screen.getByText(
        /^Latest run: 2026-01-10 \d\d:00:00 \(40 min 0 s\) · commit 41d8f32 · planner rules-v1 · 3 rounds, seed 7$/,
      ),
    ).toBeInTheDocument();
    expect(
      screen.getByText(/With no fault injected \(2 min 0 s\): 0 issues, 0 plans, 0 actions/),
    ).toBeInTheDocument();
    // a plain run (no --train) has no comparison, and one from before fixes were counted no column of them
    expect(screen.queryByRole('table', { name: COMPARISON })).not.toBeInTheDocument();
    expect(screen.queryByText(/No model was trained/)).not.toBeInTheDocument();
    expect(within(table).queryByRole('columnheader', { name: 'Fixes tried' })).not.toBeInTheDocument();
  });

  it('compares the trained model with the rule table on the held-out faults (--train)', async () => {
    mockApi({ 'api/model': MODEL, 'api/breakers': [], 'api/lab': lab('ok', { report: TRAINED }) });
    renderWithProviders(<AutomationPage />, 'viewer');
    const table = await screen.findByRole('table', { name: COMPARISON });
    expect(
      within(table)
        .getAllByRole('columnheader')
        .map((c) => c.textContent),
    ).toEqual(['Held-out faults', 'Rule table', 'Trained model rf-20261130-20']);
    const rows = within(table).getAllByRole('row').slice(1);
    expect(
      rows.map((r) => [
        within(r).getByRole('rowheader').textContent,
        ...within(r)
          .getAllByRole('cell')
          .map((c) => c.textContent),
      ]),
    ).toEqual([
      ['As expected', '3/4', '4/4'],
      ['Fixable auto-resolved', '3/4', '4/4'],
      ['Escalated', '1', '0'],
      ['Silent', '0', '0'],
      ['Fixes tried (steps)', '5', '4'],
      ['Needless actions', '0', '0'],
      ['Outside policy', '0', '0'],
      ['MTTR p50 / p90', '2.2 s / 3.6 s', '2.0 s / 4.9 s'],
    ]);
    expect(screen.getByRole('heading', { name: /Trained model against the rule table/ })).toBeInTheDocument();
    expect(screen.getByText(/^Trained on 20 faults/)).toHaveTextContent(
      'Trained on 20 faults in 5 training rounds (seed 1001); outcomes learnt from: 20 successes, ' +
        '6 failures; validation accuracy 60.0 %. A planner adopts it with initial_model: /data/lab/model.zip.',
    );
    expect(screen.getByText('initial_model: /data/lab/model.zip').tagName).toBe('CODE');
    // the per-fault table of the trained model's run counts the fixes tried too
    const faults = screen.getByRole('table', { name: 'Lab results per fault' });
    expect(within(faults).getByRole('columnheader', { name: 'Fixes tried' })).toBeInTheDocument();
    const steps = within(faults)
      .getAllByRole('row')
      .slice(1)
      .map((r) => within(r).getAllByRole('cell').at(-3)?.textContent);
    expect(steps).toEqual(['1', '0', '4']); // disk filling, log flood, the total
  });

  it('says why no model was trained, with nothing to compare', async () => {
    const untrained: LabReport = {
      ...TRAINED,
      model: {
        ...LAB_MODEL,
        file: null,
        version: null,
        trained_on: null,
        validation_accuracy: null,
        trained_outcomes: null,
        success: 3,
        failure: 0,
        why_none: 'the planner trains once it has 20 outcomes with successes and failures both',
      },
      rule_table: null,
    };
    mockApi({ 'api/model': MODEL, 'api/breakers': [], 'api/lab': lab('ok', { report: untrained }) });
    renderWithProviders(<AutomationPage />, 'viewer');
    expect(await screen.findByText(/^No model was trained/)).toHaveTextContent(
      'No model was trained: the planner trains once it has 20 outcomes with successes and failures both.',
    );
    expect(screen.getByRole('table', { name: 'Lab results per fault' })).toBeInTheDocument();
    expect(screen.queryByRole('table', { name: COMPARISON })).not.toBeInTheDocument();
    expect(screen.queryByText(/initial_model/)).not.toBeInTheDocument();
  });

  it('says when there is no lab run yet, and what is wrong with a report it cannot show', async () => {
    let answer = lab('missing');
    mockApi({ 'api/model': MODEL, 'api/breakers': [], 'api/lab': () => ({ status: 200, body: answer }) });
    const { client } = renderWithProviders(<AutomationPage />, 'viewer');
    expect(await screen.findByText(/No lab run yet: run/)).toHaveTextContent(
      'No lab run yet: run medbay lab.',
    );
    answer = lab('invalid', { problem: '/data/lab/latest.json is not a lab report: seed: Field required' });
    await client.invalidateQueries();
    expect(await screen.findByRole('alert')).toHaveTextContent(
      'The lab report cannot be shown: /data/lab/latest.json is not a lab report: seed: Field required',
    );
    answer = lab('unconfigured');
    await client.invalidateQueries();
    expect(await screen.findByText(/No lab report configured/)).toBeInTheDocument();
    expect(screen.queryByRole('table', { name: 'Lab results per fault' })).not.toBeInTheDocument();
  });
});
