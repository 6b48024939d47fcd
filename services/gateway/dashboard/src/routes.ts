import { useSyncExternalStore } from 'react';

export const PAGES = [
  { id: 'dashboard', label: 'Dashboard' },
  { id: 'monitoring', label: 'Monitoring' },
  { id: 'incidents', label: 'Incidents' },
  { id: 'approvals', label: 'Approvals' },
  { id: 'automation', label: 'Automation' },
  { id: 'events', label: 'Events' },
] as const;

export type PageId = (typeof PAGES)[number]['id'];

/** Pages live in the URL's fragment (`#/incidents`): the gateway serves one index.html. */
export function pageFromHash(hash: string): PageId {
  const id = hash.replace(/^#\/?/, '').split(/[/?]/)[0];
  return PAGES.find((page) => page.id === id)?.id ?? 'dashboard';
}

export function hrefOf(page: PageId): string {
  return `#/${page}`;
}

function subscribe(onChange: () => void): () => void {
  window.addEventListener('hashchange', onChange);
  return () => window.removeEventListener('hashchange', onChange);
}

export function useCurrentPage(): PageId {
  return useSyncExternalStore(subscribe, () => pageFromHash(window.location.hash));
}
