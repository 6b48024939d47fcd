import Box from '@mui/material/Box';
import Typography from '@mui/material/Typography';
import { useHostMetrics, useServices } from '../../api/queries';
import type { HostMetrics } from '../../api/types';
import { CARD_GRID } from '../../components/layout';
import { PageHeader } from '../../components/PageHeader';
import { QueryStatus } from '../../components/QueryStatus';
import { Section } from '../../components/Section';
import { useCanOperate } from '../../state/session';
import { CheckedServices } from './CheckedServices';
import { HostMetricCard } from './HostMetricCard';
import { PerformanceCard } from './PerformanceCard';
import { QuickActions } from './QuickActions';
import { ServiceCard } from './ServiceCard';

/** The services the collector checks, named by its `service_up` series. */
function checkedServices(hosts: HostMetrics[]): string[] {
  const names = hosts.flatMap((h) =>
    h.series.filter((s) => s.name === 'service_up').map((s) => s.labels.service ?? ''),
  );
  return [...new Set(names)].filter(Boolean).sort();
}

export function DashboardPage() {
  const metrics = useHostMetrics();
  const services = useServices();
  const canOperate = useCanOperate();
  const hosts = metrics.data ?? [];
  const hostNames = hosts.map((h) => h.host);
  return (
    <>
      <PageHeader title="Dashboard">
        {canOperate && <QuickActions hosts={hostNames} suggestions={checkedServices(hosts)} />}
      </PageHeader>
      <Section title="Hosts" id="hosts-title">
        <QueryStatus isPending={metrics.isPending} error={metrics.error} what="metrics" />
        {metrics.data && hosts.length === 0 && (
          <Typography color="text.secondary">No host has reported metrics yet.</Typography>
        )}
        <Box sx={CARD_GRID}>
          {hosts.map((host) => (
            <HostMetricCard key={host.host} metrics={host} />
          ))}
        </Box>
      </Section>
      <Section title="Performance" id="performance-title">
        <PerformanceCard hosts={hostNames} />
      </Section>
      <Section title="Medbay services" id="services-title">
        <QueryStatus isPending={services.isPending} error={services.error} what="services" />
        <Box sx={CARD_GRID}>
          {services.data?.map((health) => (
            <ServiceCard key={health.service} health={health} />
          ))}
        </Box>
      </Section>
      <Section title="Checked services" id="checked-services-title">
        <CheckedServices />
      </Section>
    </>
  );
}
