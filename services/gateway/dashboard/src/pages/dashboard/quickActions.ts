import type { ActionName } from '../../api/types';

export interface QuickActionKind {
  action: ActionName;
  label: string;
  /** What the target names, for the form's hint. */
  targetHint: string;
  /** Whether the action takes a replica count. */
  replicas: boolean;
}

/** The quick actions the dashboard offers (the gateway accepts every action). */
export const QUICK_ACTIONS: QuickActionKind[] = [
  {
    action: 'restart_service',
    label: 'Restart',
    targetHint: "The service's name in the executor's targets, e.g. demo-web",
    replicas: false,
  },
  {
    action: 'scale_up',
    label: 'Scale up',
    targetHint: "The deployment's name in the executor's targets",
    replicas: true,
  },
  {
    action: 'cleanup_disk',
    label: 'Clean up disk',
    targetHint: "The disk's name in the executor's targets",
    replicas: false,
  },
];
