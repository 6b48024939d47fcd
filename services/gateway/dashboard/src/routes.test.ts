import { describe, expect, it } from 'vitest';
import { hrefOf, pageFromHash } from './routes';

describe('pageFromHash', () => {
  it('reads the page from the fragment, the dashboard by default', () => {
    expect(pageFromHash('#/incidents')).toBe('incidents');
    expect(pageFromHash('#approvals')).toBe('approvals');
    expect(pageFromHash('#/events?type=plan.created')).toBe('events');
    expect(pageFromHash('')).toBe('dashboard');
    expect(pageFromHash('#/nowhere')).toBe('dashboard');
    expect(pageFromHash(hrefOf('automation'))).toBe('automation');
  });
});
