import { ThemeProvider } from '@mui/material/styles';
import { QueryClient, QueryClientProvider } from '@tanstack/react-query';
import { render, type RenderResult } from '@testing-library/react';
import type { ReactElement } from 'react';
import { vi } from 'vitest';
import type { Role } from '../api/types';
import { useSession } from '../state/session';
import { buildTheme } from '../theme';

export const TOKEN = 'test-token-0123456789';

function signInAs(role: Role): void {
  useSession.getState().signIn(TOKEN, { name: `test-${role}`, role });
}

/** `ui` with a fresh query client (no retries) and the dark theme, signed in as `role`. */
export function renderWithProviders(
  ui: ReactElement,
  role: Role | null = 'operator',
): RenderResult & { client: QueryClient } {
  if (role === null) useSession.getState().signOut();
  else signInAs(role);
  const client = new QueryClient({
    defaultOptions: { queries: { retry: false }, mutations: { retry: false } },
  });
  const result = render(
    <QueryClientProvider client={client}>
      <ThemeProvider theme={buildTheme('dark')}>{ui}</ThemeProvider>
    </QueryClientProvider>,
  );
  return { ...result, client };
}

export interface RecordedCall {
  path: string;
  method: string;
  body: unknown;
  authorization: string | undefined;
}

type Responder = (call: RecordedCall) => { status: number; body: unknown };
/** A JSON body answered with 200, or a function of the call giving status and body. */
type Answer = Responder | object;

/**
 * Replaces `fetch` with answers by path (without the query string); an answer is a
 * JSON body for 200 or a function giving status and body. Unknown paths get 404.
 */
export function mockApi(answers: Record<string, Answer>): RecordedCall[] {
  const calls: RecordedCall[] = [];
  vi.stubGlobal('fetch', async (input: string, init: RequestInit = {}) => {
    const headers = (init.headers ?? {}) as Record<string, string>;
    const call: RecordedCall = {
      path: input,
      method: init.method ?? 'GET',
      body: typeof init.body === 'string' ? JSON.parse(init.body) : undefined,
      authorization: headers.Authorization,
    };
    calls.push(call);
    const answer = answers[input.split('?')[0] ?? ''];
    const { status, body } =
      answer === undefined
        ? { status: 404, body: { detail: `no ${input}` } }
        : typeof answer === 'function'
          ? (answer as Responder)(call)
          : { status: 200, body: answer };
    return new Response(JSON.stringify(body), { status, headers: { 'Content-Type': 'application/json' } });
  });
  return calls;
}
