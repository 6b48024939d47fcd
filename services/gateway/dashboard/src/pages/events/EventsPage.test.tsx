import { act, screen, within } from '@testing-library/react';
import userEvent from '@testing-library/user-event';
import { beforeEach, describe, expect, it } from 'vitest';
import type { EventMessage, MedbayEvent } from '../../api/types';
import { useLive } from '../../state/live';
import { approval, NOW, plan } from '../../test/fixtures';
import { mockApi, renderWithProviders } from '../../test/render';
import EventsPage from './EventsPage';

let seq = 0;
function message(event: MedbayEvent, host: string | null): EventMessage {
  seq += 1;
  return { kind: 'event', stream: 'X', seq, type: event.type, host, event };
}

const batch: MedbayEvent = {
  event_id: 'm',
  schema_version: 1,
  timestamp: NOW,
  type: 'metric.batch',
  host: 'web-1',
  collected_at: NOW,
  samples: [],
};

describe('EventsPage', () => {
  beforeEach(() => useLive.setState({ status: 'live', events: [] }));

  it('lists live events, metric batches hidden unless asked for, filtered by host', async () => {
    mockApi({ 'api/metrics': [] });
    renderWithProviders(<EventsPage />);
    act(() => {
      const { addEvent } = useLive.getState();
      addEvent(message(batch, 'web-1'));
      addEvent(message(plan({ host: 'web-1' }), 'web-1'));
      addEvent(message(plan({ host: 'web-2', plan_id: 'bbbbbbbb00' }), 'web-2'));
      addEvent(message(approval('bbbbbbbb00'), null));
    });
    const types = () =>
      within(screen.getByRole('list', { name: 'Events, newest first' }))
        .getAllByRole('listitem')
        .map((li) => li.dataset.type);
    expect(types()).toEqual(['plan.approval', 'plan.created', 'plan.created']);

    const user = userEvent.setup();
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
      'api/replay': (call) => ({
        status: 200,
        body: { ...(call.body as object), until: NOW, count: 42, truncated: false, requested_by: 'alice' },
      }),
    });
    renderWithProviders(<EventsPage />);
    const user = userEvent.setup();
    await user.clear(screen.getByRole('textbox', { name: /Prefix/ }));
    await user.type(screen.getByRole('textbox', { name: /Prefix/ }), 'debug.incident');
    await user.click(screen.getByRole('button', { name: 'Replay' }));
    expect(
      await screen.findByText(/Re-published 42 events of ISSUES on debug\.incident/),
    ).toBeInTheDocument();
    expect(calls.at(-1)?.body).toMatchObject({
      stream: 'ISSUES',
      until: null,
      subject: null,
      prefix: 'debug.incident',
    });
  });

  it('offers no replay to viewers', () => {
    mockApi({ 'api/metrics': [] });
    renderWithProviders(<EventsPage />, 'viewer');
    expect(screen.queryByRole('button', { name: 'Replay' })).not.toBeInTheDocument();
  });
});
