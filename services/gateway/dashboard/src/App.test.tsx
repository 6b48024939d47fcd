import { screen, waitFor } from '@testing-library/react';
import userEvent from '@testing-library/user-event';
import { describe, expect, it, vi } from 'vitest';
import { App } from './App';
import { queryKeys } from './api/queries';
import { useLive } from './state/live';
import { hostMetrics } from './test/fixtures';
import { mockApi, renderWithProviders } from './test/render';

vi.mock('./pages/dashboard/PerformanceChart', () => ({ PerformanceChart: () => <p>chart</p> }));

class SilentSocket {
  onmessage = null;
  onclose = null;
  close(): void {}
}

describe('App', () => {
  it('asks for a token first', () => {
    renderWithProviders(<App />, null);
    expect(screen.getByRole('button', { name: 'Sign in' })).toBeInTheDocument();
  });

  it('shows the dashboard once signed in, and forgets what it read on signing out', async () => {
    vi.stubGlobal('WebSocket', SilentSocket);
    mockApi({ 'api/metrics': [hostMetrics('web-1', { cpu: 10 })], 'api/services': [], 'api/approvals': [] });
    const { client } = renderWithProviders(<App />, 'viewer');
    expect(await screen.findByRole('article', { name: 'Host web-1' })).toBeInTheDocument();
    expect(document.title).toBe('Dashboard · Medbay');
    await userEvent.setup().click(screen.getByRole('button', { name: 'Sign out' }));
    expect(await screen.findByRole('button', { name: 'Sign in' })).toBeInTheDocument();
    await waitFor(() => expect(client.getQueryData(queryKeys.metrics)).toBeUndefined());
    expect(useLive.getState().events).toEqual([]);
  });

  it('switches between the dark and the light theme', async () => {
    vi.stubGlobal('WebSocket', SilentSocket);
    mockApi({ 'api/metrics': [], 'api/services': [], 'api/approvals': [] });
    renderWithProviders(<App />);
    const user = userEvent.setup();
    await user.click(screen.getByRole('button', { name: 'Switch to the light theme' }));
    expect(screen.getByRole('button', { name: 'Switch to the dark theme' })).toBeInTheDocument();
    expect(JSON.parse(localStorage.getItem('medbay.theme') ?? '{}').state.mode).toBe('light');
  });
});
