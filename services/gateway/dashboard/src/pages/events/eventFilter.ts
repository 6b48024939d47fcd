import type { EventType } from '../../api/types';
import type { LiveEvent } from '../../state/live';

/** `everything`, everything but metric batches (the default: they are many), or one type. */
export type TypeChoice = 'everything' | 'no-metrics' | EventType;

export interface EventFilter {
  type: TypeChoice;
  /** '' for every host. */
  host: string;
}

export const DEFAULT_FILTER: EventFilter = { type: 'no-metrics', host: '' };

export function matches(filter: EventFilter, event: LiveEvent): boolean {
  if (filter.host && event.host !== filter.host) return false;
  if (filter.type === 'everything') return true;
  if (filter.type === 'no-metrics') return event.type !== 'metric.batch';
  return event.type === filter.type;
}
