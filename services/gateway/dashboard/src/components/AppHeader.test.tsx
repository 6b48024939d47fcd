import { act, screen } from '@testing-library/react';
import { describe, expect, it } from 'vitest';
import type { ServiceHealth } from '../api/types';
import { useSession } from '../state/session';
import { mockApi, renderWithProviders, TOKEN } from '../test/render';
import { AppHeader } from './AppHeader';
import { DryRunBanner } from './DryRunBanner';

function executor(mode: string | null): ServiceHealth {
  return {
    service: 'executor',
    url: 'http://127.0.0.1:9475/healthz',
    status: 'ok',
    http_status: 200,
    latency_ms: 2,
    detail: { uptime_seconds: 60, problems: {} },
    info: mode === null ? {} : { mode },
    error: null,
  };
}

describe('AppHeader', () => {
  it('names the user and the role without saying the same word twice', () => {
    renderWithProviders(<AppHeader current="dashboard" />);
    act(() => useSession.getState().signIn(TOKEN, { name: 'operator', role: 'operator' }));
    expect(screen.getByText('Operator')).toBeInTheDocument();
    expect(screen.queryByText(/operator · operator/i)).not.toBeInTheDocument();
  });

  it('names the zone every time shown is in', () => {
    renderWithProviders(<AppHeader current="dashboard" />);
    expect(screen.getByText(/^Times: .*UTC/)).toBeInTheDocument();
  });
});

describe('DryRunBanner', () => {
  it('says so while the executor runs in dry-run', async () => {
    mockApi({ 'api/services': [executor('dry-run')] });
    renderWithProviders(<DryRunBanner />);
    expect(
      await screen.findByText('Dry-run: the executor reports what it would do and changes nothing.'),
    ).toBeInTheDocument();
  });

  it('says nothing when the executor is live, or its mode is unknown', async () => {
    for (const mode of ['live', null]) {
      const calls = mockApi({ 'api/services': [executor(mode)] });
      const { unmount } = renderWithProviders(<DryRunBanner />);
      await screen.findByText((_, node) => node === document.body && calls.length > 0);
      await new Promise((resolve) => setTimeout(resolve, 20));
      expect(screen.queryByText(/Dry-run/)).not.toBeInTheDocument();
      unmount();
    }
  });
});
