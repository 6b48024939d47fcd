import { createTheme, type Theme } from '@mui/material/styles';
import type { ThemeMode } from './state/themeMode';

/**
 * Dark with neon accents, or light. Every text colour meets WCAG AA (4.5:1) on
 * the backgrounds it is used on; `contrastThreshold` makes MUI pick button and
 * chip text by the same rule.
 */
const PALETTES = {
  dark: {
    mode: 'dark',
    primary: { main: '#00e5ff' },
    secondary: { main: '#ff5ce1' },
    success: { main: '#3dff9a' },
    warning: { main: '#ffb629' },
    error: { main: '#ff6b81' },
    info: { main: '#7aa7ff' },
    background: { default: '#070b16', paper: '#0f1626' },
    divider: 'rgba(0, 229, 255, 0.16)',
  },
  light: {
    mode: 'light',
    primary: { main: '#006a7a' },
    secondary: { main: '#9c1b83' },
    success: { main: '#1b7a3d' },
    warning: { main: '#8a5300' },
    error: { main: '#b3261e' },
    info: { main: '#2456b8' },
    background: { default: '#f3f6fa', paper: '#ffffff' },
  },
} as const;

export function buildTheme(mode: ThemeMode): Theme {
  const dark = mode === 'dark';
  return createTheme({
    palette: { ...PALETTES[mode], contrastThreshold: 4.5 },
    shape: { borderRadius: 10 },
    typography: {
      fontFamily: '"Inter", "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif',
      h1: { fontSize: '1.6rem', fontWeight: 600 },
      h2: { fontSize: '1.25rem', fontWeight: 600 },
      h3: { fontSize: '1.05rem', fontWeight: 600 },
    },
    components: {
      MuiCard: {
        styleOverrides: {
          root: ({ theme }) => ({
            border: `1px solid ${theme.palette.divider}`,
            boxShadow: dark ? '0 0 18px rgba(0, 229, 255, 0.06)' : theme.shadows[1],
          }),
        },
      },
      MuiPaper: { styleOverrides: { root: { backgroundImage: 'none' } } },
      MuiButton: {
        defaultProps: { disableElevation: true },
        styleOverrides: { root: { textTransform: 'none', fontWeight: 600 } },
      },
      MuiToggleButton: { styleOverrides: { root: { textTransform: 'none' } } },
      MuiLinearProgress: {
        styleOverrides: { root: { height: 8, borderRadius: 4 }, bar: { borderRadius: 4 } },
      },
    },
  });
}
