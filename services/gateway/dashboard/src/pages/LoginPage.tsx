import Alert from '@mui/material/Alert';
import Box from '@mui/material/Box';
import Button from '@mui/material/Button';
import Card from '@mui/material/Card';
import CardContent from '@mui/material/CardContent';
import TextField from '@mui/material/TextField';
import Typography from '@mui/material/Typography';
import { useCallback, useEffect, useState, type FormEvent } from 'react';
import { ApiError, apiRequest } from '../api/client';
import type { Me } from '../api/types';
import { Logo } from '../components/Logo';
import { useSession } from '../state/session';
import { takeOfferedToken } from '../state/signInLink';

function problem(error: unknown): string {
  if (error instanceof ApiError && error.status === 401) return 'The gateway does not know this token.';
  if (error instanceof ApiError && error.status === 503) {
    return `The gateway is starting: ${error.message}. Try again in a moment.`;
  }
  if (error instanceof ApiError) return error.message;
  return 'The gateway cannot be reached.';
}

/**
 * Sign in with an API token from the gateway's config; it is kept for this tab only.
 * The token of a sign-in link (`#token=`) is tried at once, as if typed and submitted.
 */
export function LoginPage() {
  const notice = useSession((state) => state.notice);
  const signIn = useSession((state) => state.signIn);
  const [token, setToken] = useState('');
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);

  const signInWith = useCallback(
    async (candidate: string) => {
      setBusy(true);
      setError(null);
      try {
        signIn(candidate, await apiRequest<Me>('api/me', { token: candidate }));
      } catch (failure) {
        setError(problem(failure));
        setBusy(false);
      }
    },
    [signIn],
  );

  useEffect(() => {
    const offered = takeOfferedToken();
    if (offered !== null) void signInWith(offered);
  }, [signInWith]);

  const submit = (event: FormEvent) => {
    event.preventDefault();
    const candidate = token.trim();
    if (candidate) void signInWith(candidate);
  };

  return (
    <Box component="main" sx={{ minHeight: '100vh', display: 'grid', placeItems: 'center', p: 2 }}>
      <Card sx={{ width: '100%', maxWidth: 420 }}>
        <CardContent component="form" onSubmit={submit} sx={{ display: 'grid', gap: 2, p: 3 }}>
          <Box sx={{ display: 'flex', alignItems: 'center', gap: 1.5 }}>
            <Logo />
            <Typography variant="h1">Medbay</Typography>
          </Box>
          <Typography color="text.secondary">
            Sign in with an API token from the gateway&apos;s configuration.
          </Typography>
          {notice && !error && <Alert severity="info">{notice}</Alert>}
          {error && <Alert severity="error">{error}</Alert>}
          <TextField
            label="API token"
            type="password"
            autoComplete="off"
            autoFocus
            required
            value={token}
            onChange={(event) => setToken(event.target.value)}
          />
          <Button type="submit" variant="contained" size="large" disabled={busy}>
            {busy ? 'Signing in…' : 'Sign in'}
          </Button>
        </CardContent>
      </Card>
    </Box>
  );
}
