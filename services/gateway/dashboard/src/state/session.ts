import { create } from 'zustand';
import { createJSONStorage, persist } from 'zustand/middleware';
import type { Me } from '../api/types';

interface SessionState {
  token: string | null;
  me: Me | null;
  /** Why the last session ended, shown on the sign-in page. */
  notice: string | null;
  signIn: (token: string, me: Me) => void;
  signOut: (notice?: string) => void;
}

/** The API token and who it belongs to, kept for this browser tab only. */
export const useSession = create<SessionState>()(
  persist(
    (set) => ({
      token: null,
      me: null,
      notice: null,
      signIn: (token, me) => set({ token, me, notice: null }),
      signOut: (notice) => set({ token: null, me: null, notice: notice ?? null }),
    }),
    {
      name: 'medbay.session',
      storage: createJSONStorage(() => sessionStorage),
      partialize: ({ token, me }) => ({ token, me }),
    },
  ),
);

export function useCanOperate(): boolean {
  return useSession((state) => state.me?.role === 'operator');
}
