import Box from '@mui/material/Box';
import LinearProgress from '@mui/material/LinearProgress';
import { lazy, Suspense, useEffect } from 'react';
import { useLiveUpdates } from '../live/useLiveUpdates';
import { DashboardPage } from '../pages/dashboard/DashboardPage';
import { PAGES, useCurrentPage, type PageId } from '../routes';
import { AppHeader } from './AppHeader';
import { DryRunBanner } from './DryRunBanner';
import { NoticeBar } from './NoticeBar';
import { PollingBanner } from './PollingBanner';
import { SkipLink } from './SkipLink';

const MonitoringPage = lazy(() => import('../pages/monitoring/MonitoringPage'));
const IncidentsPage = lazy(() => import('../pages/incidents/IncidentsPage'));
const ApprovalsPage = lazy(() => import('../pages/approvals/ApprovalsPage'));
const AutomationPage = lazy(() => import('../pages/automation/AutomationPage'));
const EventsPage = lazy(() => import('../pages/events/EventsPage'));

function Page({ id }: { id: PageId }) {
  switch (id) {
    case 'dashboard':
      return <DashboardPage />;
    case 'monitoring':
      return <MonitoringPage />;
    case 'incidents':
      return <IncidentsPage />;
    case 'approvals':
      return <ApprovalsPage />;
    case 'automation':
      return <AutomationPage />;
    case 'events':
      return <EventsPage />;
  }
}

/** The signed-in layout: header and navigation, the live connection, the current page. */
export function Shell() {
  useLiveUpdates();
  const page = useCurrentPage();
  useEffect(() => {
    document.title = `${PAGES.find((p) => p.id === page)?.label} · Medbay`;
  }, [page]);
  return (
    <>
      <SkipLink />
      <AppHeader current={page} />
      <Box
        component="main"
        id="main"
        tabIndex={-1}
        sx={{ px: { xs: 1.5, sm: 3 }, py: 3, maxWidth: 1600, mx: 'auto', outline: 'none' }}
      >
        <DryRunBanner />
        <PollingBanner />
        <Suspense fallback={<LinearProgress aria-label="Loading the page" />}>
          <Page id={page} />
        </Suspense>
      </Box>
      <NoticeBar />
    </>
  );
}
