import CssBaseline from '@mui/material/CssBaseline';
import { ThemeProvider } from '@mui/material/styles';
import { useMemo } from 'react';
import { Shell } from './components/Shell';
import { LoginPage } from './pages/LoginPage';
import { useSession } from './state/session';
import { useThemeMode } from './state/themeMode';
import { buildTheme } from './theme';

export function App() {
  const mode = useThemeMode((state) => state.mode);
  const theme = useMemo(() => buildTheme(mode), [mode]);
  const signedIn = useSession((state) => state.token !== null && state.me !== null);
  return (
    <ThemeProvider theme={theme}>
      <CssBaseline enableColorScheme />
      {signedIn ? <Shell /> : <LoginPage />}
    </ThemeProvider>
  );
}
