import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import type { EventMessage } from '../api/types';
import type { LiveStatus } from '../state/live';
import { LiveSocket, socketAddress } from './socket';

/** Stands in for the browser's WebSocket: the test opens, sends and closes it. */
class FakeSocket {
  onmessage: ((event: MessageEvent) => void) | null = null;
  onclose: ((event: CloseEvent) => void) | null = null;
  closed = false;
  constructor(
    readonly url: string,
    readonly protocols: string[],
  ) {}
  receive(message: object): void {
    this.onmessage?.({ data: JSON.stringify(message) } as MessageEvent);
  }
  drop(code = 1006, reason = ''): void {
    this.onclose?.({ code, reason } as CloseEvent);
  }
  close(): void {
    this.closed = true;
  }
}

const HELLO = {
  kind: 'hello',
  client: 1,
  user: 'alice',
  role: 'operator',
  queue_size: 256,
  types: [],
  hosts: [],
};

describe('LiveSocket', () => {
  let sockets: FakeSocket[];
  let statuses: LiveStatus[];
  let events: EventMessage[];
  let refused: string[];
  let live: LiveSocket;

  beforeEach(() => {
    vi.useFakeTimers();
    sockets = [];
    statuses = [];
    events = [];
    refused = [];
    live = new LiveSocket(
      'token-0123456789abcdef',
      {
        onStatus: (s) => statuses.push(s),
        onEvent: (e) => events.push(e),
        onRefused: (r) => refused.push(r),
      },
      {
        baseUrl: 'https://medbay.example/dash/#/events',
        minDelayMs: 100,
        maxDelayMs: 400,
        createSocket: (url, protocols) => {
          const socket = new FakeSocket(url, protocols);
          sockets.push(socket);
          return socket as unknown as WebSocket;
        },
      },
    );
  });

  afterEach(() => {
    live.stop();
    vi.useRealTimers();
  });

  it('is live from the hello on, and passes events on', () => {
    live.start();
    expect(sockets[0]?.url).toBe('wss://medbay.example/dash/ws');
    expect(sockets[0]?.protocols).toEqual(['medbay.v1', 'bearer.token-0123456789abcdef']);
    sockets[0]?.receive(HELLO);
    const event = { kind: 'event', stream: 'ISSUES', seq: 7, type: 'issue.opened', host: 'web-1', event: {} };
    sockets[0]?.receive(event);
    expect(statuses).toEqual(['live']);
    expect(events).toEqual([event]);
  });

  it('polls while down and reconnects with growing delays', () => {
    live.start();
    sockets[0]?.receive(HELLO);
    sockets[0]?.drop();
    expect(statuses).toEqual(['live', 'polling']);
    vi.advanceTimersByTime(100);
    expect(sockets).toHaveLength(2);
    sockets[1]?.drop();
    vi.advanceTimersByTime(199);
    expect(sockets).toHaveLength(2);
    vi.advanceTimersByTime(1);
    expect(sockets).toHaveLength(3);
    sockets[2]?.receive(HELLO);
    expect(statuses.at(-1)).toBe('live');
  });

  it('gives up when the token is refused', () => {
    live.start();
    sockets[0]?.drop(4401, 'unknown token');
    vi.advanceTimersByTime(10_000);
    expect(sockets).toHaveLength(1);
    expect(refused).toEqual(['unknown token']);
  });

  it('stops for good', () => {
    live.start();
    live.stop();
    expect(sockets[0]?.closed).toBe(true);
    vi.advanceTimersByTime(10_000);
    expect(sockets).toHaveLength(1);
  });
});

describe('socketAddress', () => {
  it('puts a token that cannot be a subprotocol in the query', () => {
    const { url, protocols } = socketAddress('http://127.0.0.1:8470/', 'has spaces and/slashes');
    expect(url).toBe('ws://127.0.0.1:8470/ws?token=has+spaces+and%2Fslashes');
    expect(protocols).toEqual(['medbay.v1']);
  });
});
