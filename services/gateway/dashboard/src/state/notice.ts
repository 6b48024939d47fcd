import { create } from 'zustand';

export interface Notice {
  id: number;
  message: string;
  severity: 'success' | 'error' | 'info';
}

interface NoticeState {
  notice: Notice | null;
  show: (message: string, severity?: Notice['severity']) => void;
  dismiss: () => void;
}

let nextId = 1;

/** The one short message shown at the bottom of the screen (what an action did). */
export const useNotice = create<NoticeState>()((set) => ({
  notice: null,
  show: (message, severity = 'success') => set({ notice: { id: nextId++, message, severity } }),
  dismiss: () => set({ notice: null }),
}));
