import { describe, expect, it } from 'vitest';
import {
  describeUser,
  formatAgo,
  formatClock,
  formatDateTime,
  formatDuration,
  formatInputDateTime,
  formatRate,
  formatTime,
  parseInputDateTime,
  timeZoneLabel,
} from './format';
import { describeEvent } from './describeEvent';
import { summarizeHost } from './hostSummary';
import { sampleCount, samplesOf } from './samples';
import { traceUrl } from './jaeger';
import { levelOf } from './thresholds';
import { alert, finished, hostMetrics, metricBatch, NOW, sampleColumns } from '../test/fixtures';

describe('levelOf', () => {
  it("follows the detector's thresholds", () => {
    expect(levelOf('cpu', 79.9)).toBe('ok');
    expect(levelOf('cpu', 80)).toBe('warning');
    expect(levelOf('cpu', 95)).toBe('critical');
    expect(levelOf('memory', 84)).toBe('ok');
    expect(levelOf('memory', 85)).toBe('warning');
    expect(levelOf('disk', 89)).toBe('ok');
    expect(levelOf('disk', 90)).toBe('warning');
    expect(levelOf('disk', 97)).toBe('critical');
  });
});

describe('formatting', () => {
  it('writes durations, countdowns and rates briefly', () => {
    expect(formatDuration(12)).toBe('12 s');
    expect(formatDuration(250)).toBe('4 min 10 s');
    expect(formatDuration(7500)).toBe('2 h 5 min');
    expect(formatDuration(3 * 86_400 + 4 * 3600)).toBe('3 d 4 h');
    expect(formatClock(754)).toBe('12:34');
    expect(formatClock(3661)).toBe('1:01:01');
    expect(formatRate(512)).toBe('512 B/s');
    expect(formatRate(1_500_000)).toBe('1.5 MB/s');
    expect(formatAgo('2026-01-01T00:00:00Z', Date.parse('2026-01-01T00:05:30Z'))).toBe('5 min ago');
  });
});

describe('times', () => {
  const afternoon = new Date(2026, 0, 10, 15, 4, 5).getTime();

  it('are local, on a 24-hour clock, whatever the language', () => {
    expect(formatDateTime(afternoon)).toBe('2026-01-10 15:04:05');
    expect(formatTime(new Date(afternoon).toISOString())).toBe('15:04:05');
    expect(formatTime(new Date(2026, 0, 10, 0, 7, 0).getTime())).toBe('00:07:00');
    expect(formatInputDateTime(afternoon)).toBe('2026-01-10 15:04');
  });

  it('are typed the same way, and nothing else is taken', () => {
    expect(parseInputDateTime('2026-01-10 15:04')?.getTime()).toBe(afternoon - 5000);
    expect(parseInputDateTime(' 2026-01-10T15:04:05 ')?.getTime()).toBe(afternoon);
    for (const wrong of ['2026-02-30 10:00', '2026-01-10 3:04 PM', '2026-01-10 24:00', '', 'now']) {
      expect(parseInputDateTime(wrong)).toBeNull();
    }
  });

  it('name their zone with its offset', () => {
    expect(timeZoneLabel()).toMatch(/UTC[+-]\d\d:\d\d\)?$/);
  });
});

describe('describeUser', () => {
  it('says a name and a role once each', () => {
    expect(describeUser('operator', 'operator')).toBe('Operator');
    expect(describeUser('alice', 'operator')).toBe('alice · Operator');
  });
});

describe('summarizeHost', () => {
  it('takes the fullest disk and leaves loopback traffic out', () => {
    const metrics = hostMetrics('web-1', { cpu: 12, memory: 40 });
    metrics.series.push(
      { name: 'disk_percent', labels: { mount: '/' }, unit: '%', value: 30 },
      { name: 'disk_percent', labels: { mount: '/data' }, unit: '%', value: 91 },
      { name: 'net_errors', labels: { interface: 'eth0' }, unit: null, value: 3 },
    );
    expect(summarizeHost(metrics.series)).toEqual({
      cpu: 12,
      memory: 40,
      disk: { percent: 91, mount: '/data' },
      network: { received: 1500, sent: 500, errors: 3 },
    });
  });

  it('knows nothing of what was not collected', () => {
    expect(summarizeHost([])).toEqual({ cpu: null, memory: null, disk: null, network: null });
  });
});

describe('traceUrl', () => {
  it("opens the trace in Jaeger's UI", () => {
    expect(traceUrl('http://jaeger:16686', 'abc123')).toBe('http://jaeger:16686/trace/abc123');
    expect(traceUrl('http://jaeger:16686/ui/', 'abc')).toBe('http://jaeger:16686/ui/trace/abc');
  });
});

describe('describeEvent', () => {
  it('says how a plan ended and whom an alert went to, without flattering', () => {
    const refused = finished('a7de28ab0000', 'refused', { detail: 'breaker open' });
    expect(describeEvent(refused)).toBe('plan a7de28ab ended: refused, not fixed (breaker open)');
    expect(describeEvent(finished('a7de28ab0000', 'dry_run'))).toBe(
      'plan a7de28ab ended: dry run, nothing done',
    );
    expect(describeEvent(alert('p1'))).toBe('alert sent to oncall: demo-web on web-1 is still down');
  });
});

describe('samplesOf', () => {
  const samples = [
    { name: 'cpu_percent', value: 12.5, unit: '%' },
    { name: 'service_up', value: 1, labels: { service: 'api', check: 'http' } },
    { name: 'service_up', value: 0, labels: { service: 'db', check: 'tcp' } },
    { name: 'load1', value: 0.5 },
  ];

  it('reads columns (version 2) and a list (version 1) alike', () => {
    const v2 = metricBatch('web-1', NOW, samples);
    expect(samplesOf(v2)).toEqual(samples);
    expect(samplesOf(metricBatch('web-1', NOW, samples, 1))).toEqual(samples);
    expect(sampleCount(v2)).toBe(4);
    expect(describeEvent(v2)).toBe('4 samples');
  });

  it('takes each label set from the table, and leaves out empty units and labels', () => {
    const columns = sampleColumns(samples);
    expect(columns.label_sets).toHaveLength(3);
    expect(columns.label_index).toEqual([0, 1, 2, 0]);
    const [cpu, , , load] = samplesOf(metricBatch('web-1', NOW, samples));
    expect(cpu).toEqual({ name: 'cpu_percent', value: 12.5, unit: '%' });
    expect(load).toEqual({ name: 'load1', value: 0.5 });
  });
});
