import Box from '@mui/material/Box';
import Button from '@mui/material/Button';
import { hrefOf, PAGES, type PageId } from '../routes';
import { usePendingCount } from './usePendingCount';

/** The pages, as links; the current one is marked for screen readers too. */
export function NavLinks({ current }: { current: PageId }) {
  const pending = usePendingCount();
  return (
    <Box
      component="nav"
      aria-label="Pages"
      sx={{ order: { xs: 10, md: 0 }, width: { xs: '100%', md: 'auto' }, overflowX: 'auto' }}
    >
      <Box component="ul" sx={{ display: 'flex', gap: 0.5, m: 0, p: 0, listStyle: 'none' }}>
        {PAGES.map((page) => {
          const active = page.id === current;
          const label = page.id === 'approvals' && pending > 0 ? `${page.label} (${pending})` : page.label;
          return (
            <li key={page.id}>
              <Button
                href={hrefOf(page.id)}
                aria-current={active ? 'page' : undefined}
                color={active ? 'primary' : 'inherit'}
                sx={{
                  whiteSpace: 'nowrap',
                  borderBottom: 2,
                  borderRadius: 0,
                  borderColor: active ? 'primary.main' : 'transparent',
                  fontWeight: active ? 700 : 500,
                }}
              >
                {label}
              </Button>
            </li>
          );
        })}
      </Box>
    </Box>
  );
}
