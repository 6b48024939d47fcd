import Alert from '@mui/material/Alert';
import AlertTitle from '@mui/material/AlertTitle';
import Box from '@mui/material/Box';
import MenuItem from '@mui/material/MenuItem';
import TextField from '@mui/material/TextField';
import Typography from '@mui/material/Typography';
import { useState } from 'react';
import { useMonitoring } from '../../api/queries';
import { PageHeader } from '../../components/PageHeader';
import { QueryStatus } from '../../components/QueryStatus';
import { Section } from '../../components/Section';
import { IncidentItem } from '../incidents/IncidentItem';
import { DependencyMap } from './DependencyMap';
import { ServiceRedCard } from './ServiceRedCard';
import { TraceSearch } from './TraceSearch';

const ALL_HOSTS = '';

/** What to do for figures to show: send spans to the collector, or let it scrape them. */
function NoSpansYet() {
  return (
    <Alert severity="info" variant="outlined">
      <AlertTitle>No spans yet</AlertTitle>
      Point <code>OTEL_EXPORTER_OTLP_TRACES_ENDPOINT</code> at the collector&apos;s{' '}
      <code>:4318/v1/traces</code> (e.g. <code>http://collector-host:4318/v1/traces</code>), or have the
      collector scrape an OpenTelemetry Collector&apos;s spanmetrics. Each service&apos;s requests, errors and
      latency show here from the collector&apos;s next interval on.
    </Alert>
  );
}

/**
 * What services' traces show: per service its requests, errors and latency (p50, p95,
 * p99) now and over time, which service calls which, the incidents raised from them,
 * and a trace found by its id.
 */
export default function MonitoringPage() {
  const [host, setHost] = useState(ALL_HOSTS);
  const monitoring = useMonitoring(host === ALL_HOSTS ? null : host);
  const data = monitoring.data;
  const hosts = data?.hosts.map((h) => h.host) ?? [];
  const services = data?.services ?? [];
  const severalHosts = new Set(services.map((s) => s.host)).size > 1;
  const troubled = new Set(
    (data?.incidents ?? []).filter((i) => i.state === 'open' && i.resource).map((i) => i.resource ?? ''),
  );
  const empty = data !== undefined && services.length === 0 && data.edges.length === 0;
  return (
    <>
      <PageHeader title="Monitoring">
        {(hosts.length > 1 || host !== ALL_HOSTS) && (
          <TextField
            select
            size="small"
            label="Host"
            value={host}
            onChange={(event) => setHost(event.target.value)}
            sx={{ minWidth: 200 }}
          >
            <MenuItem value={ALL_HOSTS}>All hosts</MenuItem>
            {[...new Set([...hosts, ...(host === ALL_HOSTS ? [] : [host])])].map((name) => (
              <MenuItem key={name} value={name}>
                {name}
              </MenuItem>
            ))}
          </TextField>
        )}
      </PageHeader>
      <QueryStatus isPending={monitoring.isPending} error={monitoring.error} what="monitoring figures" />
      <Section title="Find a trace" id="trace-search-title">
        <TraceSearch />
      </Section>
      {empty && <NoSpansYet />}
      {services.length > 0 && (
        <Section title="Services" id="services-red-title">
          <Typography variant="body2" color="text.secondary" sx={{ mb: 1.5 }}>
            Requests and errors per second, error ratio and latency of each service&apos;s entry spans, per
            collector interval.
          </Typography>
          <Box
            sx={{
              display: 'grid',
              gap: 2,
              gridTemplateColumns: 'repeat(auto-fill, minmax(min(100%, 420px), 1fr))',
            }}
          >
            {services.map((red) => (
              <ServiceRedCard key={`${red.host}/${red.service}`} red={red} showHost={severalHosts} />
            ))}
          </Box>
        </Section>
      )}
      {data !== undefined && !empty && (
        <Section title="Dependency map" id="dependency-map-title">
          <DependencyMap services={services.map((s) => s.service)} edges={data.edges} troubled={troubled} />
        </Section>
      )}
      {data !== undefined && (
        <Section title="Incidents from traces" id="trace-incidents-title">
          {data.incidents.length === 0 ? (
            <Typography color="text.secondary">
              No incident raised from traces: a service erroring, slow, or gone quiet shows here.
            </Typography>
          ) : (
            data.incidents.map((incident) => (
              <IncidentItem key={incident.fingerprint} incident={incident} heading="h3" />
            ))
          )}
        </Section>
      )}
    </>
  );
}
