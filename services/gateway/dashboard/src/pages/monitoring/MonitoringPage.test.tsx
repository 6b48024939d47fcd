import { screen, within } from '@testing-library/react';
import userEvent from '@testing-library/user-event';
import { describe, expect, it, vi } from 'vitest';
import { queryKeys } from '../../api/queries';
import type { Monitoring, TraceFindings } from '../../api/types';
import { NOW, plan, serviceEdge, serviceRed, TRACE_ID, traceIncident } from '../../test/fixtures';
import { mockApi, renderWithProviders } from '../../test/render';
import MonitoringPage from './MonitoringPage';

vi.mock('./RedChart', () => ({
  RedChart: ({ kind, service, history }: { kind: string; service: string; history: unknown[] }) => (
    <p>
      {kind} chart of {service}: {history.length} points
    </p>
  ),
}));

function monitoring(more: Partial<Monitoring> = {}): Monitoring {
  return {
    services: [serviceRed('checkout', 22, 12, 2500), serviceRed('frontend', 40, 0, 120)],
    edges: [serviceEdge('frontend', 'checkout', 20), serviceEdge('checkout', 'payments', 4, false)],
    hosts: [{ host: 'web-1', last_seen: NOW, dropped_operations: 0, dropped_edges: 0 }],
    incidents: [traceIncident('error_rate', 'checkout')],
    ...more,
  };
}

function findings(jaegerUrl: string | null): TraceFindings {
  const p = plan({ issue_kind: 'error_rate' });
  return {
    trace_id: TRACE_ID,
    jaeger_url: jaegerUrl === null ? null : `${jaegerUrl}/trace/${TRACE_ID}`,
    incidents: [traceIncident('error_rate', 'checkout')],
    events: [
      {
        fingerprint: 'f1',
        at: NOW,
        stream: 'PLANS',
        summary: `plan ${p.plan_id}: restart_service`,
        event: p,
      },
    ],
  };
}

describe('MonitoringPage', () => {
  it('shows each service, its charts and operations, the map and the incidents', async () => {
    const calls = mockApi({ 'api/monitoring': monitoring(), 'api/tracing': { jaeger_url: null } });
    renderWithProviders(<MonitoringPage />);
    const checkout = await screen.findByRole('article', { name: 'Service checkout' });
    expect(within(checkout).getByTestId('requests')).toHaveTextContent('22/s');
    expect(within(checkout).getByTestId('errors')).toHaveTextContent('12/s');
    expect(within(checkout).getByTestId('error-ratio')).toHaveTextContent('54.5 %');
    expect(within(checkout).getByTestId('p95')).toHaveTextContent('2.5 s');
    expect(within(checkout).getByText('rates chart of checkout: 3 points')).toBeInTheDocument();
    expect(within(checkout).getByText('latency chart of checkout: 3 points')).toBeInTheDocument();
    const operations = within(checkout).getByRole('table', { name: 'Operations of checkout' });
    expect(within(operations).getByRole('rowheader', { name: 'POST /checkout' })).toBeInTheDocument();

    const map = screen.getByRole('img', { name: 'Dependency map: 3 services, 2 calls between them' });
    const nodes = [...map.querySelectorAll('[data-node]')].map((n) => n.getAttribute('data-node'));
    expect(nodes).toEqual(['checkout', 'frontend', 'payments']);
    expect(map.querySelector('[data-node="checkout"]')).toHaveAttribute('data-troubled', 'true');
    expect(map.querySelector('[data-edge="frontend->checkout"]')).toHaveAttribute('data-current', 'true');
    expect(map.querySelector('[data-edge="checkout->payments"]')).toHaveAttribute('data-current', 'false');
    const calls_ = screen.getByRole('list', { name: 'Calls between services' });
    expect(within(calls_).getByText(/frontend → checkout: 20\/s/)).toBeInTheDocument();
    expect(within(calls_).getByText(/checkout → payments: 4.0\/s \(not seen since/)).toBeInTheDocument();

    const incidents = screen.getByRole('region', { name: 'Incidents from traces' });
    expect(
      within(incidents).getByRole('button', { name: /Error rate on web-1: checkout/ }),
    ).toBeInTheDocument();
    expect(screen.queryByRole('combobox', { name: 'Host' })).not.toBeInTheDocument(); // one host
    expect(calls.map((c) => c.path)).toContain('api/monitoring?points=60');
  });

  it('tells a new user how to send spans when there are none', async () => {
    mockApi({
      'api/monitoring': monitoring({ services: [], edges: [], hosts: [], incidents: [] }),
      'api/tracing': { jaeger_url: null },
    });
    renderWithProviders(<MonitoringPage />);
    expect(await screen.findByText('No spans yet')).toBeInTheDocument();
    expect(screen.getByText('OTEL_EXPORTER_OTLP_TRACES_ENDPOINT')).toBeInTheDocument();
    expect(screen.getByText(':4318/v1/traces')).toBeInTheDocument();
    expect(screen.getByText(/No incident raised from traces/)).toBeInTheDocument();
    expect(screen.queryByRole('img', { name: /Dependency map/ })).not.toBeInTheDocument();
  });

  it('narrows to one host when there are several', async () => {
    const second = { ...serviceRed('db', 3, 0, 8), host: 'db-1' };
    const calls = mockApi({
      'api/monitoring': monitoring({
        services: [serviceRed('checkout', 22, 12, 2500), second],
        hosts: [
          { host: 'db-1', last_seen: NOW, dropped_operations: null, dropped_edges: null },
          { host: 'web-1', last_seen: NOW, dropped_operations: 0, dropped_edges: 0 },
        ],
      }),
      'api/tracing': { jaeger_url: null },
    });
    renderWithProviders(<MonitoringPage />);
    const user = userEvent.setup();
    expect(await screen.findByRole('article', { name: 'Service db on db-1' })).toBeInTheDocument();
    await user.click(screen.getByRole('combobox', { name: 'Host' }));
    await user.click(screen.getByRole('option', { name: 'db-1' }));
    await vi.waitFor(() => expect(calls.map((c) => c.path)).toContain('api/monitoring?host=db-1&points=60'));
  });
});

describe('Finding a trace', () => {
  it('shows what Medbay holds of it, and no link anywhere without a Jaeger UI', async () => {
    const calls = mockApi({
      'api/monitoring': monitoring(),
      'api/tracing': { jaeger_url: null },
      [`api/traces/${TRACE_ID}`]: findings(null),
    });
    const { client } = renderWithProviders(<MonitoringPage />);
    const user = userEvent.setup();
    const search = await screen.findByRole('search', { name: 'Find a trace' });
    await vi.waitFor(() => expect(client.getQueryState(queryKeys.tracing)?.status).toBe('success'));
    const field = within(search).getByRole('textbox', { name: 'Trace id' });
    await user.type(field, 'not-a-trace');
    await user.click(within(search).getByRole('button', { name: 'Find trace' }));
    expect(await within(search).findByText(/32 hexadecimal digits \(0-9, a-f\)/)).toBeInTheDocument();
    expect(calls.some((c) => c.path.startsWith('api/traces/'))).toBe(false);

    await user.clear(field);
    await user.type(field, ` ${TRACE_ID.toUpperCase()} `);
    await user.click(within(search).getByRole('button', { name: 'Find trace' }));
    const found = await screen.findByRole('heading', { name: `Trace ${TRACE_ID}` });
    const card = found.closest('[data-trace-id]') as HTMLElement;
    expect(within(card).getByText(/No Jaeger UI is configured/)).toBeInTheDocument();
    const events = within(card).getByRole('list', { name: 'Events in the trace' });
    expect(
      within(events).getByText(/plan a7de28abc05d5a0c88393a2d6e962da1: restart_service/),
    ).toBeInTheDocument();
    const incidents = within(card).getByRole('list', { name: 'Incidents in the trace' });
    expect(within(incidents).getByText('Error rate on web-1: checkout')).toBeInTheDocument();
    expect(screen.queryAllByRole('link')).toEqual([]); // not one trace link
    expect(screen.queryByRole('button', { name: /Open in Jaeger/ })).not.toBeInTheDocument();
  });

  it('says so when Medbay holds nothing of the trace', async () => {
    mockApi({
      'api/monitoring': monitoring(),
      'api/tracing': { jaeger_url: null },
      [`api/traces/${TRACE_ID}`]: { ...findings(null), incidents: [], events: [] },
    });
    renderWithProviders(<MonitoringPage />);
    const user = userEvent.setup();
    await user.type(await screen.findByRole('textbox', { name: 'Trace id' }), TRACE_ID);
    await user.keyboard('{Enter}');
    expect(await screen.findByText(/Medbay holds nothing of this trace/)).toBeInTheDocument();
  });

  it('opens the trace in Jaeger when the gateway names a Jaeger UI', async () => {
    const jaeger = 'http://jaeger.example:16686';
    mockApi({
      'api/monitoring': monitoring(),
      'api/tracing': { jaeger_url: jaeger },
      [`api/traces/${TRACE_ID}`]: findings(jaeger),
    });
    renderWithProviders(<MonitoringPage />);
    const user = userEvent.setup();
    const search = await screen.findByRole('search', { name: 'Find a trace' });
    expect(await within(search).findByRole('button', { name: 'Open in Jaeger' })).toBeDisabled();
    await user.type(within(search).getByRole('textbox', { name: 'Trace id' }), TRACE_ID);
    const open = within(search).getByRole('link', { name: /Open in Jaeger/ });
    expect(open).toHaveAttribute('href', `${jaeger}/trace/${TRACE_ID}`);
    expect(open).toHaveAttribute('target', '_blank');
    await user.click(within(search).getByRole('button', { name: 'Find trace' }));
    const link = await screen.findByRole('link', { name: /Open trace 4bf92f35 in Jaeger/ });
    expect(link).toHaveAttribute('href', `${jaeger}/trace/${TRACE_ID}`);
  });
});
