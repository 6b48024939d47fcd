import type { ServiceEdge } from '../../api/types';

/** A call between two services on the map: the same pair on several hosts counts once,
 * with their rates added up. */
export interface MapEdge {
  client: string;
  server: string;
  requestsPerSecond: number;
  /** Seen in a host's latest trace figures; otherwise fading out. */
  current: boolean;
  lastSeen: string;
}

export interface MapNode {
  service: string;
  /** The column: how many calls away from a service nothing calls. */
  column: number;
  row: number;
  x: number;
  y: number;
}

export interface MapLayout {
  nodes: MapNode[];
  edges: (MapEdge & { path: string; labelX: number; labelY: number })[];
  width: number;
  height: number;
}

export const NODE_WIDTH = 150;
export const NODE_HEIGHT = 36;
const COLUMN_GAP = 90;
const ROW_GAP = 30;
const MARGIN = 12;

/** The calls between services, one per (client, server), busiest first. */
export function mergeEdges(edges: ServiceEdge[]): MapEdge[] {
  const merged = new Map<string, MapEdge>();
  for (const edge of edges) {
    const key = JSON.stringify([edge.client, edge.server]);
    const known = merged.get(key);
    if (known === undefined) {
      merged.set(key, {
        client: edge.client,
        server: edge.server,
        requestsPerSecond: edge.requests_per_second,
        current: edge.current,
        lastSeen: edge.last_seen,
      });
    } else {
      known.requestsPerSecond += edge.requests_per_second;
      known.current ||= edge.current;
      if (Date.parse(edge.last_seen) > Date.parse(known.lastSeen)) known.lastSeen = edge.last_seen;
    }
  }
  return [...merged.values()].sort(
    (a, b) => b.requestsPerSecond - a.requestsPerSecond || a.client.localeCompare(b.client),
  );
}

/**
 * Services in columns from left to right as calls go: a service in the column after
 * the furthest of its callers (cycles stop growing at the number of services), by
 * name within a column. A call to the same or an earlier column curves below.
 */
export function layoutMap(services: string[], edges: MapEdge[]): MapLayout {
  const names = [...new Set([...services, ...edges.flatMap((e) => [e.client, e.server])])].sort();
  const column = new Map(names.map((name) => [name, 0]));
  for (let pass = 0; pass < names.length; pass += 1) {
    let changed = false;
    for (const edge of edges) {
      if (edge.client === edge.server) continue;
      const next = Math.min((column.get(edge.client) ?? 0) + 1, names.length - 1);
      if (next > (column.get(edge.server) ?? 0)) {
        column.set(edge.server, next);
        changed = true;
      }
    }
    if (!changed) break;
  }
  const rows = new Map<number, number>();
  const nodes = names.map((service) => {
    const c = column.get(service) ?? 0;
    const row = rows.get(c) ?? 0;
    rows.set(c, row + 1);
    return {
      service,
      column: c,
      row,
      x: MARGIN + c * (NODE_WIDTH + COLUMN_GAP),
      y: MARGIN + row * (NODE_HEIGHT + ROW_GAP),
    };
  });
  const at = new Map(nodes.map((node) => [node.service, node]));
  const laidOut = edges.flatMap((edge) => {
    const from = at.get(edge.client);
    const to = at.get(edge.server);
    if (from === undefined || to === undefined) return [];
    return [{ ...edge, ...route(from, to) }];
  });
  const columns = Math.max(1, ...nodes.map((n) => n.column + 1));
  const tallest = Math.max(1, ...rows.values());
  return {
    nodes,
    edges: laidOut,
    width: 2 * MARGIN + columns * NODE_WIDTH + (columns - 1) * COLUMN_GAP,
    height: 2 * MARGIN + tallest * NODE_HEIGHT + (tallest - 1) * ROW_GAP + NODE_HEIGHT,
  };
}

function route(from: MapNode, to: MapNode): { path: string; labelX: number; labelY: number } {
  const middle = NODE_HEIGHT / 2;
  if (to.column > from.column) {
    const [x1, y1] = [from.x + NODE_WIDTH, from.y + middle];
    const [x2, y2] = [to.x, to.y + middle];
    const bend = (x2 - x1) / 2;
    return {
      path: `M ${x1} ${y1} C ${x1 + bend} ${y1}, ${x2 - bend} ${y2}, ${x2} ${y2}`,
      labelX: (x1 + x2) / 2,
      labelY: (y1 + y2) / 2 - 6,
    };
  }
  // back to the same or an earlier column (a cycle, or a service calling itself): below
  const [x1, y1] = [from.x + NODE_WIDTH / 2 + 10, from.y + NODE_HEIGHT];
  const [x2, y2] = [to.x + NODE_WIDTH / 2 - 10, to.y + NODE_HEIGHT];
  const depth = Math.max(y1, y2) + NODE_HEIGHT;
  return {
    path: `M ${x1} ${y1} C ${x1} ${depth}, ${x2} ${depth}, ${x2} ${y2}`,
    labelX: (x1 + x2) / 2,
    labelY: depth - 4,
  };
}
