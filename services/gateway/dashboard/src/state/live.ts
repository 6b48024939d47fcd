import { create } from 'zustand';
import type { EventMessage } from '../api/types';

/** `live`: events arrive over the WebSocket; `polling`: it dropped, queries poll instead. */
export type LiveStatus = 'connecting' | 'live' | 'polling';

export interface LiveEvent extends EventMessage {
  /** Unique per stored event: stream and sequence. */
  key: string;
}

export const MAX_EVENTS = 500;

interface LiveState {
  status: LiveStatus;
  /** The latest events, newest first. */
  events: LiveEvent[];
  setStatus: (status: LiveStatus) => void;
  addEvent: (message: EventMessage) => void;
  /** Add events read before (the gateway's recent ones), skipping those already held. */
  addHistory: (messages: EventMessage[]) => void;
  /** Forget everything (signing out). */
  reset: () => void;
}

const keyOf = (message: EventMessage) => `${message.stream}:${message.seq}`;

export const useLive = create<LiveState>()((set) => ({
  status: 'connecting',
  events: [],
  reset: () => set({ status: 'connecting', events: [] }),
  setStatus: (status) => set({ status }),
  addEvent: (message) =>
    set((state) => {
      const key = keyOf(message);
      if (state.events.some((e) => e.key === key)) return state;
      return { events: [{ ...message, key }, ...state.events].slice(0, MAX_EVENTS) };
    }),
  addHistory: (messages) =>
    set((state) => {
      const held = new Set(state.events.map((e) => e.key));
      const older = messages
        .map((message) => ({ ...message, key: keyOf(message) }))
        .filter((e) => !held.has(e.key) && Boolean(held.add(e.key)));
      if (older.length === 0) return state;
      const time = (e: LiveEvent) => Date.parse(e.event.timestamp);
      // newest first, by the events' own time (streams number their events apart)
      const events = [...state.events, ...older.reverse()].sort((a, b) => time(b) - time(a));
      return { events: events.slice(0, MAX_EVENTS) };
    }),
}));
