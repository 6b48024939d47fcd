import DarkModeIcon from '@mui/icons-material/DarkMode';
import LightModeIcon from '@mui/icons-material/LightMode';
import LogoutIcon from '@mui/icons-material/Logout';
import AppBar from '@mui/material/AppBar';
import Box from '@mui/material/Box';
import IconButton from '@mui/material/IconButton';
import Toolbar from '@mui/material/Toolbar';
import Tooltip from '@mui/material/Tooltip';
import Typography from '@mui/material/Typography';
import { describeUser, timeZoneLabel } from '../lib/format';
import type { PageId } from '../routes';
import { useSession } from '../state/session';
import { useThemeMode } from '../state/themeMode';
import { ConnectionChip } from './ConnectionChip';
import { Logo } from './Logo';
import { NavLinks } from './NavLinks';

export function AppHeader({ current }: { current: PageId }) {
  const me = useSession((state) => state.me);
  const signOut = useSession((state) => state.signOut);
  const { mode, toggle } = useThemeMode();
  const other = mode === 'dark' ? 'light' : 'dark';
  return (
    <AppBar position="sticky" color="default" elevation={0} sx={{ borderBottom: 1, borderColor: 'divider' }}>
      <Toolbar sx={{ gap: 1.5, flexWrap: 'wrap', py: { xs: 1, sm: 0 } }}>
        <Logo />
        <Typography component="span" variant="h6" sx={{ fontWeight: 700, mr: 2 }}>
          Medbay
        </Typography>
        <NavLinks current={current} />
        <Box sx={{ flexGrow: 1 }} />
        <ConnectionChip />
        <Typography
          variant="body2"
          color="text.secondary"
          title="Every time shown is on a 24-hour clock in this zone"
          sx={{ display: { xs: 'none', lg: 'block' } }}
        >
          Times: {timeZoneLabel()}
        </Typography>
        {me && (
          <Typography variant="body2" color="text.secondary" sx={{ display: { xs: 'none', md: 'block' } }}>
            {describeUser(me.name, me.role)}
          </Typography>
        )}
        <Tooltip title={`Switch to the ${other} theme`}>
          <IconButton onClick={toggle} aria-label={`Switch to the ${other} theme`}>
            {mode === 'dark' ? <LightModeIcon /> : <DarkModeIcon />}
          </IconButton>
        </Tooltip>
        <Tooltip title="Sign out">
          <IconButton onClick={() => signOut()} aria-label="Sign out">
            <LogoutIcon />
          </IconButton>
        </Tooltip>
      </Toolbar>
    </AppBar>
  );
}
