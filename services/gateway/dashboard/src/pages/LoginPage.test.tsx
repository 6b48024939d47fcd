import { screen, waitFor } from '@testing-library/react';
import userEvent from '@testing-library/user-event';
import { describe, expect, it } from 'vitest';
import { useSession } from '../state/session';
import { mockApi, renderWithProviders } from '../test/render';
import { LoginPage } from './LoginPage';

describe('LoginPage', () => {
  it('signs in with a token the gateway knows, and keeps it for the tab', async () => {
    const calls = mockApi({ 'api/me': { name: 'alice', role: 'operator' } });
    renderWithProviders(<LoginPage />, null);
    const user = userEvent.setup();
    await user.type(screen.getByLabelText(/API token/), ' secret-token-0123456789 ');
    await user.click(screen.getByRole('button', { name: 'Sign in' }));
    await waitFor(() => expect(useSession.getState().me).toEqual({ name: 'alice', role: 'operator' }));
    expect(calls[0]?.authorization).toBe('Bearer secret-token-0123456789');
    expect(JSON.parse(sessionStorage.getItem('medbay.session') ?? '{}').state.token).toBe(
      'secret-token-0123456789',
    );
  });

  it('says so when the token is unknown', async () => {
    mockApi({ 'api/me': () => ({ status: 401, body: { detail: 'unknown token' } }) });
    renderWithProviders(<LoginPage />, null);
    const user = userEvent.setup();
    await user.type(screen.getByLabelText(/API token/), 'wrong-token-0123456789');
    await user.click(screen.getByRole('button', { name: 'Sign in' }));
    expect(await screen.findByText('The gateway does not know this token.')).toBeInTheDocument();
    expect(useSession.getState().token).toBeNull();
  });
});
