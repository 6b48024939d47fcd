/** The approver's default `expiry_minutes`: an undecided plan is rejected this long after it was made. */
export const EXPIRY_MINUTES = 15;

/** When a plan made at `planTimestamp` expires (ms since the epoch). */
export function expiresAt(planTimestamp: string, minutes = EXPIRY_MINUTES): number {
  return Date.parse(planTimestamp) + minutes * 60_000;
}
