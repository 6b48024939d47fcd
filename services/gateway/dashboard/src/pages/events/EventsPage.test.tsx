import { act, screen, waitFor, within } from '@testing-library/react';
import userEvent from '@testing-library/user-event';
import { beforeEach, describe, expect, it } from 'vitest';
import type { EventMessage, MedbayEvent } from '../../api/types';
import { useLive } from '../../state/live';
import { approval, NOW, plan } from '../../test/fixtures';
import { mockApi, renderWithProviders } from '../../test/render';
import EventsPage from './EventsPage';

let seq = 0;
function message(event: MedbayEvent, host: string | null, stream = 'X'): EventMessage {
  seq += 1;
  return { kind: 'event', stream, seq, type: event.type, host, event };
}

/** No pause between a simulated user's steps: only rendering takes time. */
const quickUser = () => userEvent.setup({ delay: null });

const types = () =>
  within(screen.getByRole('list', { name: 'Events, newest first' }))
    .getAllByRole('listitem')
    .map((li) => li.dataset.type);

const batch: MedbayEvent = {
  event_id: 'm',
  schema_version: 1,
  timestamp: NOW,
  type: 'metric.batch',
  host: 'web-1',
  collected_at: NOW,
  samples: [],
  check_errors: {},
};

describe('EventsPage', () => {
  beforeEach(() => useLive.setState({ status: 'live', events: [] }));

  it('lists live events, metric batches hidden unless asked for, filtered by host', async () => {
    mockApi({ 'api/metrics': [], 'api/events': [] });
    renderWithProviders(<EventsPage />);
    act(() => {
      const { addEvent } = useLive.getState();
      addEvent(message(batch, 'web-1'));
      addEvent(message(plan({ host: 'web-1' }), 'web-1'));
      addEvent(message(plan({ host: 'web-2', plan_id: 'bbbbbbbb00' }), 'web-2'));
      addEvent(message(approval('bbbbbbbb00'), null));
    });
    expect(types()).toEqual(['plan.approval', 'plan.created', 'plan.created']);

    const user = quickUser();
    await user.click(screen.getByRole('combobox', { name: 'Type' }));
    await user.click(screen.getByRole('option', { name: 'All' }));
    expect(types()).toHaveLength(4);

    await user.click(screen.getByRole('combobox', { name: 'Host' }));
    await user.click(screen.getByRole('option', { name: 'web-2' }));
    expect(types()).toEqual(['plan.created']);
    expect(screen.getByText(/plan bbbbbbbb: Restart service demo-web/)).toBeInTheDocument();
  });

  it('replays a time range for operators', async () => {
    const calls = mockApi({
      'api/metrics': [],
      'api/events': [],
      'api/replay': (call) => ({
        status: 200,
        body: { ...(call.body as object), until: NOW, count: 42, truncated: false, requested_by: 'alice' },
      }),
    });
    renderWithProviders(<EventsPage />);
    const user = quickUser();
    const from = screen.getByRole('textbox', { name: /From/ });
    expect((from as HTMLInputElement).value).toMatch(/^\d{4}-\d\d-\d\d \d\d:\d\d$/); // 24 h
    await user.clear(from);
    await user.paste('2026-01-10 15:30');
    await user.clear(screen.getByRole('textbox', { name: /Prefix/ }));
    await user.paste('debug.incident');
    await user.click(screen.getByRole('button', { name: 'Replay' }));
    expect(
      await screen.findByText(/Re-published 42 events of ISSUES on debug\.incident/),
    ).toBeInTheDocument();
    expect(calls.at(-1)?.body).toMatchObject({
      stream: 'ISSUES',
      since: new Date(2026, 0, 10, 15, 30).toISOString(),
      until: null,
      subject: null,
      prefix: 'debug.incident',
    });
  });

  it('refuses a time it cannot read, rather than guess', async () => {
    mockApi({ 'api/metrics': [], 'api/events': [] });
    renderWithProviders(<EventsPage />);
    const user = quickUser();
    await user.clear(screen.getByRole('textbox', { name: /From/ }));
    await user.paste('01/10/2026 3:30 PM');
    expect(screen.getByText(/Not a time: YYYY-MM-DD HH:MM, 24 h/)).toBeInTheDocument();
    expect(screen.getByRole('button', { name: 'Replay' })).toBeDisabled();
  });

  it('shows the events read before it opened, then live ones, each once', async () => {
    const earlier = message(plan({ host: 'web-1', plan_id: 'cccccccc00' }), 'web-1', 'PLANS');
    const both = message(approval('cccccccc00'), 'web-1', 'APPROVALS');
    mockApi({ 'api/metrics': [], 'api/events': [earlier, both] });
    act(() => useLive.getState().addEvent(both)); // arrived live before the page opened
    renderWithProviders(<EventsPage />);
    await waitFor(() => expect(types()).toEqual(['plan.approval', 'plan.created']));
    act(() => {
      useLive.getState().addEvent(both); // a repeat: ignored
      useLive.getState().addEvent(message(plan({ host: 'web-2', plan_id: 'dddddddd00' }), 'web-2'));
    });
    expect(types()).toEqual(['plan.created', 'plan.approval', 'plan.created']);
    expect(screen.getByText(/plan cccccccc: Restart service demo-web/)).toBeInTheDocument();
  });

  it('offers no replay to viewers', () => {
    mockApi({ 'api/metrics': [], 'api/events': [] });
    renderWithProviders(<EventsPage />, 'viewer');
    expect(screen.queryByRole('button', { name: 'Replay' })).not.toBeInTheDocument();
  });
});
