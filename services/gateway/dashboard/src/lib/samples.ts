import type { MetricBatch, MetricSample } from '../api/types';

/**
 * A batch's samples, whichever version wrote it: version 2 carries them as columns
 * (sample i is `names[i]`, `values[i]`, `units[i]` and the labels
 * `label_sets[label_index[i]]`), version 1 as a list. As in the gateway, a sample's
 * unit and labels are left out when empty.
 */
export function samplesOf(batch: MetricBatch): MetricSample[] {
  const { samples } = batch;
  if (Array.isArray(samples)) return samples;
  return samples.names.map((name, i) => {
    const sample: MetricSample = { name, value: samples.values[i] ?? NaN };
    const unit = samples.units[i];
    const labels = samples.label_sets[samples.label_index[i] ?? -1];
    if (unit) sample.unit = unit;
    if (labels !== undefined && Object.keys(labels).length > 0) sample.labels = labels;
    return sample;
  });
}

/** How many samples a batch holds, without reading them. */
export function sampleCount(batch: MetricBatch): number {
  return Array.isArray(batch.samples) ? batch.samples.length : batch.samples.names.length;
}
