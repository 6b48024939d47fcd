import { useQueryClient, type QueryKey } from '@tanstack/react-query';
import { useEffect } from 'react';
import { useLive } from '../state/live';
import { useSession } from '../state/session';
import { applyMetricBatch, staleViews, staleViewsOfBatch } from './applyEvent';
import { LiveSocket } from './socket';

/** Refetches wait this long, so that a burst of events costs one refetch per view. */
const INVALIDATE_AFTER_MS = 250;

/** Follows the gateway's live events while signed in, keeping the cached views current. */
export function useLiveUpdates(): void {
  const client = useQueryClient();
  const token = useSession((state) => state.token);
  const signOut = useSession((state) => state.signOut);
  const { setStatus, addEvent } = useLive.getState();

  useEffect(() => {
    if (token === null) return;
    const pending = new Map<string, QueryKey>();
    let timer: ReturnType<typeof setTimeout> | null = null;
    const flush = () => {
      timer = null;
      for (const queryKey of pending.values()) void client.invalidateQueries({ queryKey });
      pending.clear();
    };
    const socket = new LiveSocket(token, {
      onStatus: setStatus,
      onEvent: (message) => {
        addEvent(message);
        const event = message.event;
        const stale = event.type === 'metric.batch' ? staleViewsOfBatch(event) : staleViews(event.type);
        if (event.type === 'metric.batch') applyMetricBatch(client, event);
        if (stale.length === 0) return;
        for (const key of stale) pending.set(JSON.stringify(key), key);
        timer ??= setTimeout(flush, INVALIDATE_AFTER_MS);
      },
      onRefused: (reason) => signOut(`Live updates refused: ${reason}`),
    });
    setStatus('connecting');
    socket.start();
    return () => {
      socket.stop();
      if (timer !== null) clearTimeout(timer);
    };
  }, [client, token, signOut, setStatus, addEvent]);
}
