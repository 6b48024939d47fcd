import { act, screen, waitFor, within } from '@testing-library/react';
import userEvent from '@testing-library/user-event';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { approval, NOW, pendingApproval } from '../../test/fixtures';
import { mockApi, renderWithProviders } from '../../test/render';
import ApprovalsPage from './ApprovalsPage';

const PLAN_ID = pendingApproval().plan.plan_id;

describe('ApprovalsPage', () => {
  afterEach(() => vi.useRealTimers());

  it("counts down to the approver's deadline", async () => {
    vi.useFakeTimers({ toFake: ['Date', 'setInterval', 'clearInterval'] });
    vi.setSystemTime(Date.parse(NOW) + 2 * 60_000 + 26_000);
    const deadline = new Date(Date.parse(NOW) + 40 * 60_000).toISOString(); // not the default 15
    mockApi({ 'api/approvals': [pendingApproval({}, { deadline })] });
    renderWithProviders(<ApprovalsPage />);
    const timer = await screen.findByRole('timer');
    expect(timer).toHaveTextContent('Expires in 37:34');
    act(() => vi.advanceTimersByTime(4000));
    expect(timer).toHaveTextContent('Expires in 37:30');
    act(() => vi.advanceTimersByTime(38 * 60_000));
    expect(timer).toHaveTextContent('Expired');
  });

  it('shows no countdown when no deadline is known', async () => {
    mockApi({ 'api/approvals': [pendingApproval()] });
    renderWithProviders(<ApprovalsPage />);
    const card = await screen.findByRole('article', { name: /Service down on web-1/ });
    expect(within(card).getByText('No deadline known')).toBeInTheDocument();
    expect(screen.queryByRole('timer')).not.toBeInTheDocument();
  });

  it('names a quick action by what it does and who asked', async () => {
    const quick_action = {
      action: 'restart_service' as const,
      target: 'nginx',
      requested_by: 'olivia',
      channel: 'gateway',
      reason: 'stuck',
    };
    mockApi({
      'api/approvals': [pendingApproval({ host: 'vm', issue_kind: 'other' }, { quick_action })],
    });
    renderWithProviders(<ApprovalsPage />);
    const card = await screen.findByRole('article', { name: /Quick action: Restart service nginx on vm/ });
    expect(within(card).getByText('Quick action asked by olivia via gateway: stuck')).toBeInTheDocument();
    expect(screen.queryByText(/Other on vm/)).not.toBeInTheDocument();
  });

  it("sends an operator's approval with the reason", async () => {
    const calls = mockApi({
      'api/approvals': [pendingApproval()],
      [`api/approvals/${PLAN_ID}/approve`]: {
        status: 202,
        body: { approval: approval(PLAN_ID), note: 'approve sent to the executor' },
      },
    });
    renderWithProviders(<ApprovalsPage />);
    const card = await screen.findByRole('article', { name: /Service down on web-1/ });
    expect(within(card).getByText('Confidence 42 %')).toBeInTheDocument();
    const user = userEvent.setup();
    await user.type(within(card).getByRole('textbox', { name: 'Reason (optional)' }), 'checked the logs');
    await user.click(within(card).getByRole('button', { name: /^Approve plan/ }));
    await waitFor(() => expect(calls.some((c) => c.method === 'POST')).toBe(true));
    expect(calls.find((c) => c.method === 'POST')).toMatchObject({
      path: `api/approvals/${PLAN_ID}/approve`,
      body: { reason: 'checked the logs' },
    });
  });

  it('shows why a decision was refused', async () => {
    mockApi({
      'api/approvals': [pendingApproval()],
      [`api/approvals/${PLAN_ID}/reject`]: () => ({
        status: 409,
        body: { detail: `plan ${PLAN_ID} is already approved by bob` },
      }),
    });
    renderWithProviders(<ApprovalsPage />);
    const user = userEvent.setup();
    await user.click(await screen.findByRole('button', { name: /^Reject plan/ }));
    expect(await screen.findByText(`plan ${PLAN_ID} is already approved by bob`)).toBeInTheDocument();
  });

  it('lets viewers look but not decide', async () => {
    mockApi({ 'api/approvals': [pendingApproval()] });
    renderWithProviders(<ApprovalsPage />, 'viewer');
    await screen.findByRole('article', { name: /Service down on web-1/ });
    expect(screen.queryByRole('button', { name: /Approve/ })).not.toBeInTheDocument();
    expect(screen.queryByRole('button', { name: /Reject/ })).not.toBeInTheDocument();
    expect(screen.getByText(/Deciding takes an operator token/)).toBeInTheDocument();
  });
});
