import { useSession } from './session';

let offered: string | null = null;

/** The token of a `#token=<token>` fragment, or null. */
export function tokenFromHash(hash: string): string | null {
  const match = /^#token=([^&]+)/.exec(hash);
  if (match?.[1] === undefined) return null;
  try {
    return decodeURIComponent(match[1]).trim() || null;
  } catch {
    return null; // not valid percent-encoding
  }
}

/**
 * At start, a sign-in link (`http://…/#token=<token>`, as a launcher prints it): the
 * token leaves the address bar at once, so that it is neither shown nor kept in the
 * history, and waits for the sign-in page (`takeOfferedToken`). A session signed in
 * with another token ends: the link says which one to use.
 */
export function acceptSignInLink(): void {
  const token = tokenFromHash(window.location.hash);
  if (token === null) return;
  const { pathname, search } = window.location;
  window.history.replaceState(window.history.state, '', pathname + search);
  const session = useSession.getState();
  if (session.token === token && session.me !== null) return;
  session.signOut();
  offered = token;
}

/** The sign-in link's token, once: signing out later does not sign in again. */
export function takeOfferedToken(): string | null {
  const token = offered;
  offered = null;
  return token;
}
