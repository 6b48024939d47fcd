import { screen, waitFor } from '@testing-library/react';
import userEvent from '@testing-library/user-event';
import { describe, expect, it } from 'vitest';
import { useNotice } from '../../state/notice';
import { mockApi, renderWithProviders, TOKEN } from '../../test/render';
import { QuickActions } from './QuickActions';

describe('QuickActions', () => {
  it('asks the gateway for the action, which the planner plans under the approval rules', async () => {
    const calls = mockApi({
      'api/actions': (call) => ({
        status: 202,
        body: { request: call.body, note: 'the planner turns it into a plan under the usual approval rules' },
      }),
    });
    renderWithProviders(<QuickActions hosts={['web-1', 'web-2']} suggestions={['demo-web']} />);
    const user = userEvent.setup();
    await user.click(screen.getByRole('button', { name: 'Scale up' }));
    await user.type(screen.getByRole('combobox', { name: /Target/ }), 'api');
    const replicas = screen.getByRole('spinbutton', { name: /Replicas to add/ });
    await user.clear(replicas);
    await user.type(replicas, '3');
    await user.click(screen.getByRole('button', { name: 'Request scale up' }));
    await waitFor(() => expect(screen.queryByRole('dialog')).not.toBeInTheDocument());
    expect(calls.at(-1)).toEqual({
      path: 'api/actions',
      method: 'POST',
      body: { host: 'web-1', action: 'scale_up', target: 'api', params: { replicas: 3 }, reason: '' },
      authorization: `Bearer ${TOKEN}`,
    });
    expect(useNotice.getState().notice?.message).toMatch(/^Scale up of api on web-1 requested/);
  });
});
