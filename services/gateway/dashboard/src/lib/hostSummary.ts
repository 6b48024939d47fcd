import type { SeriesValue } from '../api/types';

export interface HostSummary {
  cpu: number | null;
  memory: number | null;
  /** The fullest mount. */
  disk: { percent: number; mount: string } | null;
  /** Summed over every interface but loopback; null before the collector has two readings. */
  network: { received: number; sent: number; errors: number } | null;
}

const LOOPBACK = new Set(['lo', 'lo0']);

/** The four figures a host card shows, from a host's current series. */
export function summarizeHost(series: SeriesValue[]): HostSummary {
  const summary: HostSummary = { cpu: null, memory: null, disk: null, network: null };
  let received: number | null = null;
  let sent = 0;
  let errors = 0;
  for (const s of series) {
    const nic = s.labels.interface;
    const external = nic !== undefined && !LOOPBACK.has(nic);
    if (s.name === 'cpu_percent') summary.cpu = s.value;
    else if (s.name === 'memory_percent') summary.memory = s.value;
    else if (s.name === 'disk_percent' && (summary.disk === null || s.value > summary.disk.percent)) {
      summary.disk = { percent: s.value, mount: s.labels.mount ?? '' };
    } else if (external && s.name === 'net_recv_bytes_per_second') received = (received ?? 0) + s.value;
    else if (external && s.name === 'net_sent_bytes_per_second') sent += s.value;
    else if (external && s.name === 'net_errors') errors += s.value;
  }
  if (received !== null) summary.network = { received, sent, errors };
  return summary;
}
