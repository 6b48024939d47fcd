import { screen, waitFor, within } from '@testing-library/react';
import userEvent from '@testing-library/user-event';
import { describe, expect, it } from 'vitest';
import type { PlannerModel } from '../../api/types';
import { NOW } from '../../test/fixtures';
import { mockApi, renderWithProviders } from '../../test/render';
import AutomationPage from './AutomationPage';

const MODEL: PlannerModel = {
  version: 'forest-20260110-1200',
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

describe('AutomationPage', () => {
  it("shows the planner's model and each action's success rate", async () => {
    mockApi({ 'api/model': MODEL, 'api/breakers': [] });
    renderWithProviders(<AutomationPage />, 'viewer');
    expect(await screen.findByText('forest-20260110-1200')).toBeInTheDocument();
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
