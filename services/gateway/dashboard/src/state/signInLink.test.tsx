import { screen } from '@testing-library/react';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { App } from '../App';
import { mockApi, renderWithProviders } from '../test/render';
import { useSession } from './session';
import { acceptSignInLink, takeOfferedToken, tokenFromHash } from './signInLink';

vi.mock('../pages/dashboard/PerformanceChart', () => ({ PerformanceChart: () => <p>chart</p> }));

class SilentSocket {
  onmessage = null;
  onclose = null;
  close(): void {}
}

const LINK_TOKEN = 'link-token-0123456789';

function openLink(url: string): void {
  window.history.replaceState(null, '', url);
  acceptSignInLink();
}

describe('a sign-in link', () => {
  afterEach(() => {
    window.history.replaceState(null, '', '/');
    takeOfferedToken();
    useSession.getState().signOut();
  });

  it('signs in with its #token= as the form would, and leaves the address bar', async () => {
    vi.stubGlobal('WebSocket', SilentSocket);
    const calls = mockApi({
      'api/me': { name: 'alice', role: 'operator' },
      'api/metrics': [],
      'api/services': [],
      'api/approvals': [],
    });
    openLink(`/?view=1#token=${LINK_TOKEN}`);
    expect(window.location.href).toBe('http://localhost:3000/?view=1');
    renderWithProviders(<App />, null);
    expect(await screen.findByRole('button', { name: 'Sign out' })).toBeInTheDocument();
    expect(useSession.getState()).toMatchObject({
      token: LINK_TOKEN,
      me: { name: 'alice', role: 'operator' },
    });
    expect(calls[0]).toMatchObject({ path: 'api/me', authorization: `Bearer ${LINK_TOKEN}` });
    expect(JSON.parse(sessionStorage.getItem('medbay.session') ?? '{}').state.token).toBe(LINK_TOKEN);
  });

  it('says so when the gateway does not know its token, and is not tried again', async () => {
    const calls = mockApi({ 'api/me': () => ({ status: 401, body: { detail: 'unknown token' } }) });
    openLink(`/#token=${LINK_TOKEN}`);
    expect(window.location.hash).toBe('');
    const { unmount } = renderWithProviders(<App />, null);
    expect(await screen.findByText('The gateway does not know this token.')).toBeInTheDocument();
    expect(useSession.getState().token).toBeNull();
    unmount();
    renderWithProviders(<App />, null);
    expect(screen.getByRole('button', { name: 'Sign in' })).toBeEnabled();
    expect(calls).toHaveLength(1);
  });

  it('ends a session with another token, and keeps one with the same', () => {
    useSession.getState().signIn('other-token-0123456789', { name: 'bob', role: 'viewer' });
    openLink(`/#token=${LINK_TOKEN}`);
    expect(useSession.getState().token).toBeNull();
    expect(takeOfferedToken()).toBe(LINK_TOKEN);

    useSession.getState().signIn(LINK_TOKEN, { name: 'alice', role: 'operator' });
    openLink(`/#token=${LINK_TOKEN}`);
    expect(useSession.getState().token).toBe(LINK_TOKEN);
    expect(takeOfferedToken()).toBeNull();
    expect(window.location.hash).toBe('');
  });

  it('is only a #token= fragment: page fragments stay as they are', () => {
    openLink('/#/incidents');
    expect(window.location.hash).toBe('#/incidents');
    expect(takeOfferedToken()).toBeNull();
    expect(tokenFromHash('#token=a%2Bb%3D')).toBe('a+b=');
    expect(tokenFromHash('#token=%E0%A4%A')).toBeNull();
    expect(tokenFromHash('#token=')).toBeNull();
  });
});
