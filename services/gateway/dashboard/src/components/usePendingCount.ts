import { usePendingApprovals } from '../api/queries';

/** How many plans wait for a decision (0 while unknown). */
export function usePendingCount(): number {
  return usePendingApprovals().data?.length ?? 0;
}
