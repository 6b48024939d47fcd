import { screen, within } from '@testing-library/react';
import { describe, expect, it, vi } from 'vitest';
import { hostMetrics, NOW } from '../../test/fixtures';
import { mockApi, renderWithProviders } from '../../test/render';
import { DashboardPage } from './DashboardPage';

vi.mock('./PerformanceChart', () => ({
  PerformanceChart: ({ host, points }: { host: string; points: unknown[] }) => (
    <p>
      chart of {host}: {points.length} points
    </p>
  ),
}));

function answers() {
  return {
    'api/metrics': [hostMetrics('web-1', { cpu: 42, memory: 88, disk: 97 })],
    'api/metrics/web-1': {
      ...hostMetrics('web-1', {}),
      series: [{ name: 'cpu_percent', labels: {}, unit: '%', value: 42, history: [[NOW, 42]] }],
    },
    'api/checked-services': [
      { host: 'web-1', service: 'nginx', up: false, since: NOW, checked_at: NOW },
      { host: 'web-1', service: 'postgres', up: true, since: NOW, checked_at: NOW },
    ],
    'api/services': [
      {
        service: 'planner',
        url: 'http://127.0.0.1:9473/healthz',
        status: 'ok',
        http_status: 200,
        latency_ms: 3,
        detail: { uptime_seconds: 7500, problems: {} },
        info: {},
        error: null,
      },
      {
        service: 'executor',
        url: 'http://127.0.0.1:9475/healthz',
        status: 'unreachable',
        http_status: null,
        latency_ms: null,
        detail: null,
        info: { mode: 'dry-run' },
        error: 'ConnectError',
      },
    ],
  };
}

describe('DashboardPage', () => {
  it('colours each figure by its thresholds and warns when high', async () => {
    mockApi(answers());
    renderWithProviders(<DashboardPage />);
    const card = await screen.findByRole('article', { name: 'Host web-1' });
    const level = (kind: string) => card.querySelector(`[data-metric="${kind}"]`)?.getAttribute('data-level');
    expect(level('cpu')).toBe('ok');
    expect(level('memory')).toBe('warning');
    expect(level('disk')).toBe('critical');
    expect(within(card).getByText('42.0 %')).toBeInTheDocument();
    expect(within(card).getByText('High: at or over 85 %')).toBeInTheDocument();
    expect(within(card).getByText('Critical: at or over 95 %')).toBeInTheDocument();
    expect(within(card).getByRole('progressbar', { name: 'CPU use' })).toHaveAttribute('aria-valuenow', '42');
    expect(within(card).getByText('in 1.5 KB/s · out 500 B/s')).toBeInTheDocument();
    expect(await screen.findByText('chart of web-1: 1 points')).toBeInTheDocument();
  });

  it('shows each service running or stopped, with its uptime', async () => {
    mockApi(answers());
    renderWithProviders(<DashboardPage />);
    const planner = await screen.findByRole('article', { name: 'Service planner' });
    expect(within(planner).getByText('Running')).toBeInTheDocument();
    expect(within(planner).getByText(/Up 2 h 5 min/)).toBeInTheDocument();
    const executor = screen.getByRole('article', { name: 'Service executor' });
    expect(within(executor).getByText('Stopped')).toBeInTheDocument();
  });

  it('lists the services the collector checks, up or down and since when', async () => {
    mockApi(answers());
    renderWithProviders(<DashboardPage />);
    const table = await screen.findByRole('table', { name: 'Checked services' });
    const rows = within(table).getAllByRole('row').slice(1);
    expect(rows.map((row) => [...row.querySelectorAll('td')].slice(0, 3).map((c) => c.textContent))).toEqual([
      ['web-1', 'nginx', 'Down'],
      ['web-1', 'postgres', 'Up'],
    ]);
    expect(within(rows[0]!).getByText(/^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d$/)).toBeInTheDocument();
    expect(screen.getByRole('article', { name: 'Service executor' })).toHaveTextContent('Mode: dry-run');
  });

  it('offers quick actions to operators only', async () => {
    mockApi(answers());
    const { unmount } = renderWithProviders(<DashboardPage />, 'viewer');
    await screen.findByRole('article', { name: 'Host web-1' });
    expect(screen.queryByRole('group', { name: 'Quick actions' })).not.toBeInTheDocument();
    unmount();
    renderWithProviders(<DashboardPage />, 'operator');
    const actions = await screen.findByRole('group', { name: 'Quick actions' });
    expect(
      within(actions)
        .getAllByRole('button')
        .map((b) => b.textContent),
    ).toEqual(['Restart', 'Scale up', 'Clean up disk']);
  });
});
