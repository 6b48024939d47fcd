import { useMutation, useQueryClient } from '@tanstack/react-query';
import { apiRequest } from './client';
import { queryKeys } from './queries';
import type {
  ActionAccepted,
  BreakerResetResponse,
  DecisionResponse,
  QuickActionRequest,
  ReplayRequest,
  ReplayResponse,
} from './types';

export interface Decision {
  planId: string;
  decision: 'approve' | 'reject';
  reason: string;
}

export function useDecision() {
  const client = useQueryClient();
  return useMutation({
    mutationFn: ({ planId, decision, reason }: Decision) =>
      apiRequest<DecisionResponse>(`api/approvals/${encodeURIComponent(planId)}/${decision}`, {
        method: 'POST',
        body: { reason },
      }),
    onSettled: () =>
      Promise.all([
        client.invalidateQueries({ queryKey: queryKeys.approvals }),
        client.invalidateQueries({ queryKey: ['incidents'] }),
      ]),
  });
}

export function useQuickAction() {
  return useMutation({
    mutationFn: (request: QuickActionRequest) =>
      apiRequest<ActionAccepted>('api/actions', { method: 'POST', body: request }),
  });
}

export function useResetBreaker() {
  const client = useQueryClient();
  return useMutation({
    mutationFn: (target: string) =>
      apiRequest<BreakerResetResponse>(`api/breakers/${encodeURIComponent(target)}/reset`, {
        method: 'POST',
      }),
    onSettled: () => client.invalidateQueries({ queryKey: queryKeys.breakers }),
  });
}

export function useReplay() {
  return useMutation({
    mutationFn: (request: ReplayRequest) =>
      apiRequest<ReplayResponse>('api/replay', { method: 'POST', body: request }),
  });
}
