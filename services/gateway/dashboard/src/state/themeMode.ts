import { create } from 'zustand';
import { createJSONStorage, persist } from 'zustand/middleware';

export type ThemeMode = 'dark' | 'light';

interface ThemeModeState {
  mode: ThemeMode;
  toggle: () => void;
}

export const useThemeMode = create<ThemeModeState>()(
  persist(
    (set) => ({
      mode: 'dark',
      toggle: () => set((state) => ({ mode: state.mode === 'dark' ? 'light' : 'dark' })),
    }),
    { name: 'medbay.theme', storage: createJSONStorage(() => localStorage) },
  ),
);
