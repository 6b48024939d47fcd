import type { MedbayEvent } from '../api/types';
import { humanize, shortId } from './format';
import { sampleCount } from './samples';
import { STATUS_LABELS } from './labels';

/** One line saying what an event is about. */
export function describeEvent(event: MedbayEvent): string {
  switch (event.type) {
    case 'metric.batch':
      return `${sampleCount(event)} samples`;
    case 'issue.opened':
    case 'issue.updated':
    case 'issue.resolved':
      return `${event.severity} ${event.kind} on ${event.resource}: ${event.metric} = ${event.value}`;
    case 'plan.created':
      return `plan ${shortId(event.plan_id)}: ${event.steps.map((s) => `${humanize(s.action)} ${s.target}`).join(', then ')} (confidence ${Math.round(event.confidence * 100)} %, ${event.risk} risk${event.requires_approval ? ', needs approval' : ''})`;
    case 'plan.approval':
      return `plan ${shortId(event.plan_id)} ${event.decision === 'approve' ? 'approved' : 'rejected'} by ${event.decided_by} via ${event.channel}`;
    case 'action.result':
      return `plan ${shortId(event.plan_id)} step ${event.step_index + 1} ${humanize(event.action)} ${event.target}: ${event.outcome === null ? event.status : humanize(event.outcome)}`;
    case 'plan.finished':
      return `plan ${shortId(event.plan_id)} ended: ${STATUS_LABELS[event.outcome].toLowerCase()}${event.detail ? ` (${event.detail})` : ''}`;
    case 'alert.raised':
      return `alert sent to ${event.target}: ${event.message}`;
    case 'action.requested':
      return `${humanize(event.action)} ${event.target} requested by ${event.requested_by} via ${event.channel}`;
    case 'breaker.reset':
      return `breaker for ${event.target} reset by ${event.reset_by}`;
  }
}
