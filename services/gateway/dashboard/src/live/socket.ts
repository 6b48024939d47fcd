import type { EventMessage, SocketMessage } from '../api/types';
import type { LiveStatus } from '../state/live';

/** The gateway's close codes that a reconnect cannot fix (medbay.gateway.hub). */
const CLOSE_UNAUTHORIZED = 4401;
const CLOSE_FORBIDDEN = 4403;
const SUBPROTOCOL = 'medbay.v1';
/** Characters a WebSocket subprotocol may hold (an RFC 7230 token). */
const TOKEN_CHARS = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;

export interface LiveHandlers {
  onStatus: (status: LiveStatus) => void;
  onEvent: (message: EventMessage) => void;
  /** The token was refused: reconnecting would not help. */
  onRefused: (reason: string) => void;
}

export type SocketFactory = (url: string, protocols: string[]) => WebSocket;

export interface LiveSocketOptions {
  /** The page the dashboard is served from; `ws` beside it is the gateway's socket. */
  baseUrl?: string;
  minDelayMs?: number;
  maxDelayMs?: number;
  createSocket?: SocketFactory;
}

/** The gateway's WebSocket URL, and how to pass the token (a subprotocol when it can be one). */
export function socketAddress(baseUrl: string, token: string): { url: string; protocols: string[] } {
  const url = new URL('ws', baseUrl);
  url.protocol = url.protocol === 'https:' ? 'wss:' : 'ws:';
  url.hash = '';
  if (TOKEN_CHARS.test(token)) return { url: url.toString(), protocols: [SUBPROTOCOL, `bearer.${token}`] };
  url.searchParams.set('token', token);
  return { url: url.toString(), protocols: [SUBPROTOCOL] };
}

/**
 * Live events from `/ws`, reconnecting with growing delays when the connection
 * drops. The status is `live` from the gateway's hello until the socket closes,
 * `polling` while it is down.
 */
export class LiveSocket {
  private socket: WebSocket | null = null;
  private retry: ReturnType<typeof setTimeout> | null = null;
  private delay: number;
  private stopped = false;
  private readonly minDelay: number;
  private readonly maxDelay: number;
  private readonly createSocket: SocketFactory;
  private readonly baseUrl: string;

  constructor(
    private readonly token: string,
    private readonly handlers: LiveHandlers,
    options: LiveSocketOptions = {},
  ) {
    this.baseUrl = options.baseUrl ?? window.location.href;
    this.minDelay = options.minDelayMs ?? 1000;
    this.maxDelay = options.maxDelayMs ?? 30_000;
    this.createSocket = options.createSocket ?? ((url, protocols) => new WebSocket(url, protocols));
    this.delay = this.minDelay;
  }

  start(): void {
    this.stopped = false;
    this.connect();
  }

  stop(): void {
    this.stopped = true;
    if (this.retry !== null) clearTimeout(this.retry);
    this.retry = null;
    this.socket?.close(1000, 'done');
    this.socket = null;
  }

  private connect(): void {
    const { url, protocols } = socketAddress(this.baseUrl, this.token);
    let socket: WebSocket;
    try {
      socket = this.createSocket(url, protocols);
    } catch {
      this.down();
      return;
    }
    this.socket = socket;
    socket.onmessage = (message: MessageEvent) => this.receive(message.data);
    socket.onclose = (event: CloseEvent) => {
      if (this.socket !== socket) return;
      this.socket = null;
      if (event.code === CLOSE_UNAUTHORIZED || event.code === CLOSE_FORBIDDEN) {
        this.stopped = true;
        this.handlers.onRefused(event.reason || 'the token was refused');
        return;
      }
      this.down();
    };
  }

  private receive(data: unknown): void {
    if (typeof data !== 'string') return;
    let message: SocketMessage;
    try {
      message = JSON.parse(data) as SocketMessage;
    } catch {
      return;
    }
    if (message.kind === 'hello') {
      this.delay = this.minDelay;
      this.handlers.onStatus('live');
    } else if (message.kind === 'event') {
      this.handlers.onEvent(message);
    }
  }

  private down(): void {
    if (this.stopped) return;
    this.handlers.onStatus('polling');
    this.retry = setTimeout(() => {
      this.retry = null;
      if (!this.stopped) this.connect();
    }, this.delay);
    this.delay = Math.min(this.delay * 2, this.maxDelay);
  }
}
