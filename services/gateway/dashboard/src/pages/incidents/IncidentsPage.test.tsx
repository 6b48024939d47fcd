import { screen, within } from '@testing-library/react';
import userEvent from '@testing-library/user-event';
import { describe, expect, it } from 'vitest';
import type { IncidentSummary } from '../../api/types';
import { incidentDetail } from '../../test/fixtures';
import { mockApi, renderWithProviders } from '../../test/render';
import IncidentsPage from './IncidentsPage';

const {
  issue: _issue,
  plans: _plans,
  timeline: _timeline,
  timeline_dropped: _dropped,
  ...summary
} = incidentDetail();

describe('IncidentsPage', () => {
  it('opens an incident into its timeline, with a link to the trace', async () => {
    const calls = mockApi({
      'api/incidents': [summary satisfies IncidentSummary],
      'api/incidents/f1': incidentDetail(),
      'config.json': { jaegerUrl: 'http://jaeger.example:16686' },
    });
    renderWithProviders(<IncidentsPage />);
    const user = userEvent.setup();
    await user.click(await screen.findByRole('button', { name: /Service down on web-1: demo-web/ }));
    const timeline = await screen.findByRole('list', { name: 'Timeline' });
    const entries = within(timeline)
      .getAllByRole('listitem')
      .filter((li) => li.dataset.type);
    expect(entries.map((li) => li.dataset.type)).toEqual(['plan.created', 'plan.approval', 'action.result']);
    expect(within(timeline).getByText('Confidence 42 %')).toBeInTheDocument();
    expect(within(timeline).getByText('Low risk')).toBeInTheDocument();
    expect(within(timeline).getByText('Approved')).toBeInTheDocument();
    expect(within(timeline).getByText(/by alice via gateway: looks right/)).toBeInTheDocument();
    expect(within(timeline).getByText('Success')).toBeInTheDocument();
    expect(within(timeline).getByText('Fix verified')).toBeInTheDocument();
    const trace = await within(timeline).findByRole('link', { name: /Trace of plan a7de28ab in Jaeger/ });
    expect(trace.getAttribute('href')).toBe(
      'http://jaeger.example:16686/trace/4bf92f3577b34da6a3ce929d0e0e4736',
    );
    expect(calls.map((c) => c.path)).toContain('api/incidents?limit=200');
  });

  it('asks only for open incidents when told to', async () => {
    const calls = mockApi({ 'api/incidents': [] });
    renderWithProviders(<IncidentsPage />);
    const user = userEvent.setup();
    await user.click(screen.getByRole('button', { name: 'Open' }));
    expect(await screen.findByText('No open incidents.')).toBeInTheDocument();
    expect(calls.map((c) => c.path)).toContain('api/incidents?state=open&limit=200');
  });
});
