import { MutationCache, QueryCache, QueryClient } from '@tanstack/react-query';
import { useSession } from '../state/session';
import { ApiError } from './client';

/** Answers a retry cannot change. */
const FINAL = new Set([400, 401, 403, 404, 409, 422]);

function signOutIfRefused(error: Error): void {
  if (error instanceof ApiError && error.status === 401) {
    useSession.getState().signOut(`Signed out: ${error.message}`);
  }
}

export function createQueryClient(): QueryClient {
  return new QueryClient({
    queryCache: new QueryCache({ onError: signOutIfRefused }),
    mutationCache: new MutationCache({ onError: signOutIfRefused }),
    defaultOptions: {
      queries: {
        staleTime: 2000,
        retry: (failures, error) => !(error instanceof ApiError && FINAL.has(error.status)) && failures < 2,
      },
    },
  });
}
