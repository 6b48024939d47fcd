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
  /** Forget everything (signing out). */
  reset: () => void;
}

export const useLive = create<LiveState>()((set) => ({
  status: 'connecting',
  events: [],
  reset: () => set({ status: 'connecting', events: [] }),
  setStatus: (status) => set({ status }),
  addEvent: (message) =>
    set((state) => ({
      events: [{ ...message, key: `${message.stream}:${message.seq}` }, ...state.events].slice(0, MAX_EVENTS),
    })),
}));
