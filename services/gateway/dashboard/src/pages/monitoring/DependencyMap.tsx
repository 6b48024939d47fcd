import Box from '@mui/material/Box';
import { useTheme } from '@mui/material/styles';
import Typography from '@mui/material/Typography';
import { useId } from 'react';
import type { ServiceEdge } from '../../api/types';
import { formatTime } from '../../lib/format';
import { formatPerSecond } from '../../lib/traces';
import { layoutMap, mergeEdges, NODE_HEIGHT, NODE_WIDTH } from './mapLayout';

interface DependencyMapProps {
  /** Every service with figures, so that one nothing calls is on the map too. */
  services: string[];
  edges: ServiceEdge[];
  /** Services with an open incident from their traces: drawn in the error colour. */
  troubled: Set<string>;
}

/** At most this many characters of a service's name fit in its box. */
const NAME_CHARS = 18;

function shortName(name: string): string {
  return name.length > NAME_CHARS ? `${name.slice(0, NAME_CHARS - 1)}…` : name;
}

/** Thicker for busier calls: 1.5 px, up to 5 px at 1000 requests per second and more. */
function strokeWidth(rate: number): number {
  return 1.5 + Math.min(3.5, Math.log10(1 + rate) * 1.2);
}

/**
 * Which service calls which, as the spans show it: services left to right as calls go,
 * an arrow per call with its rate; a call not in the latest figures is dashed and
 * muted (its label still legible) until the gateway drops it. The same calls follow as a list, for screen readers and
 * for copying.
 */
export function DependencyMap({ services, edges, troubled }: DependencyMapProps) {
  const theme = useTheme();
  const id = useId();
  const merged = mergeEdges(edges);
  const layout = layoutMap(services, merged);
  const arrow = `${id}-arrow`;
  const faded = `${id}-arrow-faded`;
  if (layout.nodes.length === 0) return null;
  const text = theme.palette.text.primary;
  const muted = theme.palette.text.secondary;
  const line = theme.palette.primary.main;
  return (
    <Box>
      {merged.length === 0 && (
        <Typography color="text.secondary" sx={{ mb: 1 }}>
          No calls between services yet: a call shows once a service's span has a parent in another service
          (trace context passed along, e.g. by OpenTelemetry's HTTP instrumentation).
        </Typography>
      )}
      <Box sx={{ overflowX: 'auto', border: 1, borderColor: 'divider', borderRadius: 1, p: 1 }}>
        <svg
          width={layout.width}
          height={layout.height}
          viewBox={`0 0 ${layout.width} ${layout.height}`}
          role="img"
          aria-label={`Dependency map: ${layout.nodes.length} services, ${merged.length} calls between them`}
          data-testid="dependency-map"
        >
          <defs>
            {[
              [arrow, line],
              [faded, muted],
            ].map(([markerId, color]) => (
              <marker
                key={markerId}
                id={markerId}
                viewBox="0 0 10 10"
                refX="9"
                refY="5"
                markerWidth="7"
                markerHeight="7"
                orient="auto-start-reverse"
              >
                <path d="M 0 0 L 10 5 L 0 10 z" fill={color} />
              </marker>
            ))}
          </defs>
          {layout.edges.map((edge) => (
            <g
              key={`${edge.client}->${edge.server}`}
              data-edge={`${edge.client}->${edge.server}`}
              data-current={edge.current}
            >
              <path
                d={edge.path}
                fill="none"
                stroke={edge.current ? line : muted}
                strokeWidth={strokeWidth(edge.requestsPerSecond)}
                strokeDasharray={edge.current ? undefined : '6 4'}
                opacity={edge.current ? 1 : 0.6}
                markerEnd={`url(#${edge.current ? arrow : faded})`}
              />
              <text
                x={edge.labelX}
                y={edge.labelY}
                textAnchor="middle"
                fontSize="12"
                fill={edge.current ? text : muted}
              >
                {formatPerSecond(edge.requestsPerSecond)}
              </text>
            </g>
          ))}
          {layout.nodes.map((node) => {
            const inTrouble = troubled.has(node.service);
            const border = inTrouble ? theme.palette.error.main : theme.palette.primary.main;
            return (
              <g key={node.service} data-node={node.service} data-troubled={inTrouble}>
                <title>{node.service}</title>
                <rect
                  x={node.x}
                  y={node.y}
                  width={NODE_WIDTH}
                  height={NODE_HEIGHT}
                  rx={8}
                  fill={theme.palette.background.paper}
                  stroke={border}
                  strokeWidth={inTrouble ? 2.5 : 1.5}
                />
                <text
                  x={node.x + NODE_WIDTH / 2}
                  y={node.y + NODE_HEIGHT / 2 + 4}
                  textAnchor="middle"
                  fontSize="13"
                  fontWeight={600}
                  fill={text}
                >
                  {shortName(node.service)}
                </text>
              </g>
            );
          })}
        </svg>
      </Box>
      {merged.length > 0 && (
        <Box component="ul" aria-label="Calls between services" sx={{ m: 0, mt: 1, pl: 3 }}>
          {merged.map((edge) => (
            <Typography
              component="li"
              variant="body2"
              key={`${edge.client}->${edge.server}`}
              color={edge.current ? 'text.primary' : 'text.secondary'}
            >
              {edge.client} → {edge.server}: {formatPerSecond(edge.requestsPerSecond)}
              {!edge.current && ` (not seen since ${formatTime(edge.lastSeen)})`}
            </Typography>
          ))}
        </Box>
      )}
    </Box>
  );
}
