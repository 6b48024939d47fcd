import { act, screen } from '@testing-library/react';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { useLive } from '../state/live';
import { useSession } from '../state/session';
import { hostMetrics } from '../test/fixtures';
import { mockApi, renderWithProviders } from '../test/render';
import { Shell } from './Shell';

vi.mock('../pages/dashboard/PerformanceChart', () => ({ PerformanceChart: () => <p>chart</p> }));

/** A WebSocket class whose connections close at once with `code`, never opening. */
function closingSocket(code: number, reason = '') {
  return class {
    onmessage: unknown = null;
    onclose: ((event: { code: number; reason: string }) => void) | null = null;
    constructor() {
      setTimeout(() => this.onclose?.({ code, reason }), 0);
    }
    close(): void {}
  };
}

/** The gateway is out of reach. */
const UnreachableSocket = closingSocket(1006);

describe('Shell', () => {
  afterEach(() => {
    vi.useRealTimers();
    window.location.hash = '';
  });

  it('says so, and polls, while live updates are down', async () => {
    vi.stubGlobal('WebSocket', UnreachableSocket);
    const calls = mockApi({
      'api/metrics': [hostMetrics('web-1', { cpu: 10 })],
      'api/services': [],
      'api/approvals': [],
    });
    renderWithProviders(<Shell />);
    expect(await screen.findByText(/Live updates are interrupted/)).toBeInTheDocument();
    expect(screen.getByRole('status', { name: 'Updates: polling' })).toBeInTheDocument();
    const before = calls.filter((c) => c.path === 'api/metrics').length;
    await act(() => new Promise((resolve) => setTimeout(resolve, 5200)));
    expect(calls.filter((c) => c.path === 'api/metrics').length).toBeGreaterThan(before);
  }, 10_000);

  it('shows the page named in the address and marks it current', async () => {
    vi.stubGlobal('WebSocket', UnreachableSocket);
    mockApi({
      'api/approvals': [],
      'api/model': { version: null, candidates: {}, success_rates: {}, success_rates_by_kind: {} },
      'api/breakers': [],
    });
    window.location.hash = '#/automation';
    renderWithProviders(<Shell />);
    expect(await screen.findByRole('heading', { level: 1, name: 'Automation' })).toBeInTheDocument();
    expect(screen.getByRole('link', { name: 'Automation' })).toHaveAttribute('aria-current', 'page');
    expect(await screen.findByText(/No trained model yet/)).toBeInTheDocument();
  });

  it('signs out when live updates refuse the token', async () => {
    vi.stubGlobal('WebSocket', closingSocket(4401, 'unknown token'));
    mockApi({ 'api/metrics': [], 'api/services': [], 'api/approvals': [] });
    renderWithProviders(<Shell />);
    await vi.waitFor(() => expect(useSession.getState().token).toBeNull());
    expect(useSession.getState().notice).toBe('Live updates refused: unknown token');
    expect(useLive.getState().status).not.toBe('live');
  });
});
