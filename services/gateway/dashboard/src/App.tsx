import CssBaseline from '@mui/material/CssBaseline';
import { ThemeProvider } from '@mui/material/styles';
import { useQueryClient } from '@tanstack/react-query';
import { useEffect, useMemo } from 'react';
import { Shell } from './components/Shell';
import { LoginPage } from './pages/LoginPage';
import { useLive } from './state/live';
import { useSession } from './state/session';
import { useThemeMode } from './state/themeMode';
import { buildTheme } from './theme';

export function App() {
  const mode = useThemeMode((state) => state.mode);
  const theme = useMemo(() => buildTheme(mode), [mode]);
  const signedIn = useSession((state) => state.token !== null && state.me !== null);
  const client = useQueryClient();
  useEffect(() => {
    if (signedIn) return;
    client.clear(); // nothing read with one token is shown to the next
    useLive.getState().reset();
  }, [signedIn, client]);
  return (
    <ThemeProvider theme={theme}>
      <CssBaseline enableColorScheme />
      {signedIn ? <Shell /> : <LoginPage />}
    </ThemeProvider>
  );
}
