/** The detector's default thresholds (medbay.detector.config), in percent. */
export const THRESHOLDS = {
  cpu: { warning: 80, critical: 95 },
  memory: { warning: 85, critical: 95 },
  disk: { warning: 90, critical: 95 },
} as const;

export type UsageKind = keyof typeof THRESHOLDS;
export type Level = 'ok' | 'warning' | 'critical';

export function levelOf(kind: UsageKind, percent: number): Level {
  const { warning, critical } = THRESHOLDS[kind];
  if (percent >= critical) return 'critical';
  if (percent >= warning) return 'warning';
  return 'ok';
}

/** The MUI palette colour for a level. */
export const LEVEL_COLOR = { ok: 'success', warning: 'warning', critical: 'error' } as const;
