import { screen, within } from '@testing-library/react';
import userEvent from '@testing-library/user-event';
import { describe, expect, it, vi } from 'vitest';
import { queryKeys } from '../../api/queries';
import type { IncidentDetail, IncidentStatus, IncidentSummary } from '../../api/types';
import { alert, finished, incidentDetail, issueOpened, NOW, plan, TRACE_ID } from '../../test/fixtures';
import { mockApi, renderWithProviders } from '../../test/render';
import IncidentsPage from './IncidentsPage';

const {
  issue: _issue,
  plans: _plans,
  timeline: _timeline,
  timeline_dropped: _dropped,
  episodes: _episodes,
  ...summary
} = incidentDetail();

/** The fixture's incident, recurred: three episodes, newest first. */
function recurring(): IncidentDetail {
  const detail = incidentDetail();
  const [only] = detail.episodes;
  if (!only) throw new Error('the fixture has an episode');
  const episodes = [3, 2, 1].map((number) => ({
    ...only,
    number,
    opened_at: `2026-01-0${number}T10:00:00Z`,
    resolved_at: number === 3 ? null : `2026-01-0${number}T10:05:00Z`,
    state: number === 3 ? ('open' as const) : ('resolved' as const),
    timeline: number === 3 ? only.timeline : only.timeline.slice(0, 1),
  }));
  return { ...detail, recurrences: 2, episodes };
}

describe('IncidentsPage', () => {
  it('opens an incident into its timeline, with a link to the trace', async () => {
    const calls = mockApi({
      'api/incidents': [summary satisfies IncidentSummary],
      'api/incidents/f1': incidentDetail(),
      'api/tracing': { jaeger_url: 'http://jaeger.example:16686' },
    });
    renderWithProviders(<IncidentsPage />);
    const user = userEvent.setup();
    const incident = await screen.findByRole('button', { name: /Service down on web-1: demo-web/ });
    expect(within(incident).getByText('connection refused')).toBeInTheDocument(); // what was wrong
    expect(within(incident).getByText('Fixed, verified')).toBeInTheDocument();
    await user.click(incident);
    const timeline = await screen.findByRole('list', { name: 'Timeline' });
    const entries = within(timeline)
      .getAllByRole('listitem')
      .filter((li) => li.dataset.type);
    expect(entries.map((li) => li.dataset.type)).toEqual([
      'plan.created',
      'plan.approval',
      'action.result',
      'plan.finished',
    ]);
    expect(within(timeline).getByText('Confidence 42 %')).toBeInTheDocument();
    expect(within(timeline).getByText('Low risk')).toBeInTheDocument();
    expect(within(timeline).getByText('Approved')).toBeInTheDocument();
    expect(within(timeline).getByText(/by alice via gateway: looks right/)).toBeInTheDocument();
    expect(within(timeline).getByText('Success')).toBeInTheDocument();
    expect(within(timeline).getByText('Fix verified')).toBeInTheDocument();
    expect(within(timeline).getByText('Plan ended', { exact: false })).toBeInTheDocument();
    expect(within(timeline).getByText('Fixed, verified')).toBeInTheDocument();
    const trace = await within(timeline).findByRole('link', { name: /Trace of plan a7de28ab in Jaeger/ });
    expect(trace.getAttribute('href')).toBe(
      'http://jaeger.example:16686/trace/4bf92f3577b34da6a3ce929d0e0e4736',
    );
    expect(calls.map((c) => c.path)).toContain('api/incidents?limit=200');
  });

  it('shows no trace link without a Jaeger UI, only the trace id', async () => {
    const detail = incidentDetail();
    const [episode] = detail.episodes;
    if (!episode) throw new Error('the fixture has an episode');
    const issue = {
      ...issueOpened(),
      kind: 'error_rate' as const,
      metric: 'span_service_errors_per_second',
      signals: { requests_per_second: 80, errors_per_second: 60, error_ratio: 0.75, latency_p95_ms: 2500 },
    };
    const opened = { at: NOW, stream: 'ISSUES', summary: 'opened', event: issue, trace_id: TRACE_ID };
    mockApi({
      'api/incidents': [summary],
      'api/incidents/f1': { ...detail, episodes: [{ ...episode, timeline: [opened, ...episode.timeline] }] },
      'api/tracing': { jaeger_url: null },
    });
    const { client } = renderWithProviders(<IncidentsPage />);
    const user = userEvent.setup();
    await user.click(await screen.findByRole('button', { name: /Service down on web-1: demo-web/ }));
    const timeline = await screen.findByRole('list', { name: 'Timeline' });
    await vi.waitFor(() => expect(client.getQueryState(queryKeys.tracing)?.status).toBe('success'));
    expect(within(timeline).getByText(TRACE_ID)).toBeInTheDocument();
    expect(within(timeline).getByTestId('signals')).toHaveTextContent(
      'Traces: 80/s requests · 60/s errors · 75.0 % error ratio · p95 2.5 s',
    );
    expect(screen.queryAllByRole('link')).toEqual([]);
  });

  it('asks only for open incidents when told to', async () => {
    const calls = mockApi({ 'api/incidents': [] });
    renderWithProviders(<IncidentsPage />);
    const user = userEvent.setup();
    await user.click(screen.getByRole('button', { name: 'Open' }));
    expect(await screen.findByText('No open incidents.')).toBeInTheDocument();
    expect(calls.map((c) => c.path)).toContain('api/incidents?state=open&limit=200');
  });

  it('shows a recurring incident by episodes: the latest open, older ones folded', async () => {
    mockApi({
      'api/incidents': [{ ...summary, recurrences: 2 }],
      'api/incidents/f1': recurring(),
    });
    renderWithProviders(<IncidentsPage />);
    const user = userEvent.setup();
    const incident = await screen.findByRole('button', { name: /Service down on web-1: demo-web/ });
    expect(within(incident).getByText('recurred 2 times')).toBeInTheDocument();
    await user.click(incident);
    const latest = await screen.findByRole('region', {
      name: /^Episode 3 · opened .* · still open · 1 plan$/,
    });
    expect(
      within(latest)
        .getAllByRole('listitem')
        .filter((li) => li.dataset.type),
    ).toHaveLength(4);
    expect(screen.getAllByRole('list', { name: 'Timeline' })).toHaveLength(1); // older ones folded
    const older = screen.getByRole('button', {
      name: /^Episode 1 · opened 2026-01-01 \d\d:00:00 · resolved/,
    });
    expect(older).toHaveAttribute('aria-expanded', 'false');
    await user.click(older);
    expect(await screen.findAllByRole('list', { name: 'Timeline' })).toHaveLength(2);
  });

  it('names a quick action by what it does and who asked, not "Other on vm"', async () => {
    const quick_action = {
      action: 'restart_service' as const,
      target: 'nginx',
      requested_by: 'olivia',
      channel: 'gateway',
      reason: '',
    };
    mockApi({
      'api/incidents': [{ ...summary, host: 'vm', kind: 'other' as const, resource: null, quick_action }],
    });
    renderWithProviders(<IncidentsPage />);
    const item = await screen.findByRole('button', { name: /Quick action: Restart service nginx on vm/ });
    expect(within(item).getByText('asked by olivia via gateway')).toBeInTheDocument();
    expect(screen.queryByText(/Other on vm/)).not.toBeInTheDocument();
  });
});

describe('IncidentsPage, honestly', () => {
  /** Each status, as the list says it, and whether its chip is the green one. */
  const STATUSES: [IncidentStatus, string][] = [
    ['verified', 'Fixed, verified'],
    ['refused', 'Refused, not fixed'],
    ['failed', 'Failed, not fixed'],
    ['not_fixed', 'Not fixed'],
    ['interrupted', 'Interrupted, not fixed'],
    ['dry_run', 'Dry run, nothing done'],
    ['alerted', 'A person was alerted'],
    ['not_planned', 'Raised, not planned'],
    ['running', 'Running'],
    ['pending_approval', 'Awaiting approval'],
    ['queued', 'Queued'],
    ['rejected', 'Rejected'],
    ['expired', 'Expired, nobody decided'],
  ];

  it('says what was done about each incident, and only a verified fix is green', async () => {
    mockApi({
      'api/incidents': STATUSES.map(([status], i) => ({
        ...summary,
        fingerprint: `f${i}`,
        host: `web-${i}`,
        status,
        plan_status: status === 'not_planned' ? null : summary.plan_status,
      })),
    });
    renderWithProviders(<IncidentsPage />);
    for (const [i, [status, label]] of STATUSES.entries()) {
      const item = await screen.findByRole('button', { name: new RegExp(`on web-${i}: demo-web`) });
      const chip = within(item).getByText(label).closest('[data-incident-status]');
      expect(chip).toHaveAttribute('data-incident-status', status);
      expect(chip?.classList.contains('MuiChip-colorSuccess')).toBe(status === 'verified');
      const notFixed = ['refused', 'failed', 'not_fixed', 'interrupted'].includes(status);
      expect(chip?.classList.contains('MuiChip-colorError')).toBe(notFixed);
    }
  });

  it('shows a refused plan, the alert it raised and that a person was told', async () => {
    const p = plan();
    const ending = finished(p.plan_id, 'refused', {
      detail: 'restart_service demo-web: breaker open',
      escalated: true,
      steps_run: 0,
    });
    const detail = incidentDetail(ending);
    const [episode] = detail.episodes;
    if (!episode) throw new Error('the fixture has an episode');
    const entry = {
      at: ending.timestamp,
      stream: 'RESULTS',
      summary: 'alert sent to oncall',
      event: alert(p.plan_id),
    };
    const timeline = [...episode.timeline.slice(0, -1), entry, ...episode.timeline.slice(-1)];
    mockApi({
      'api/incidents': [{ ...summary, status: 'refused', outcome: 'refused' }],
      'api/incidents/f1': { ...detail, episodes: [{ ...episode, timeline }] },
    });
    renderWithProviders(<IncidentsPage />);
    const user = userEvent.setup();
    const item = await screen.findByRole('button', { name: /Service down on web-1: demo-web/ });
    expect(within(item).getByText('Refused, not fixed')).toBeInTheDocument();
    expect(within(item).queryByText(/Finished/)).not.toBeInTheDocument();
    await user.click(item);
    const list = await screen.findByRole('list', { name: 'Timeline' });
    const ended = within(list)
      .getAllByRole('listitem')
      .find((li) => li.dataset.type === 'plan.finished');
    if (!ended) throw new Error('no plan.finished entry');
    expect(within(ended).getByText('Refused, not fixed')).toBeInTheDocument();
    expect(within(ended).getByText('A person was alerted')).toBeInTheDocument();
    expect(within(ended).getByText('restart_service demo-web: breaker open')).toBeInTheDocument();
    expect(within(ended).getByText(/0 steps run/)).toBeInTheDocument();
    const sent = within(list)
      .getAllByRole('listitem')
      .find((li) => li.dataset.type === 'alert.raised');
    if (!sent) throw new Error('no alert.raised entry');
    expect(within(sent).getByText('Alert sent to oncall')).toBeInTheDocument();
    expect(within(sent).getByText('demo-web on web-1 is still down')).toBeInTheDocument();
  });
});
