import { useTheme } from '@mui/material/styles';
import {
  CategoryScale,
  Chart as ChartJS,
  Legend,
  LinearScale,
  LineElement,
  PointElement,
  Tooltip,
  type ChartData,
  type ChartOptions,
} from 'chart.js';
import { Line } from 'react-chartjs-2';
import type { PerformancePoint } from '../../api/queries';
import { formatPercent, formatTime } from '../../lib/format';

ChartJS.register(CategoryScale, LinearScale, PointElement, LineElement, Tooltip, Legend);

function describe(host: string, points: PerformancePoint[]): string {
  const last = points.at(-1);
  if (last === undefined) return `CPU and memory of ${host}: no readings yet`;
  const part = (name: string, value: number | null) =>
    value === null ? `${name} unknown` : `${name} ${formatPercent(value)}`;
  return `CPU and memory of ${host} over the last ${points.length} readings; latest: ${part('CPU', last.cpu)}, ${part('memory', last.memory)}`;
}

/** CPU and memory of one host over the last readings, overlaid. */
export function PerformanceChart({ host, points }: { host: string; points: PerformancePoint[] }) {
  const theme = useTheme();
  const text = theme.palette.text.secondary;
  const grid = theme.palette.divider;
  const data: ChartData<'line', (number | null)[], string> = {
    labels: points.map((p) => formatTime(p.at)),
    datasets: [
      {
        label: 'CPU %',
        data: points.map((p) => p.cpu),
        borderColor: theme.palette.primary.main,
        backgroundColor: theme.palette.primary.main,
        tension: 0.3,
        pointRadius: 2,
      },
      {
        label: 'Memory %',
        data: points.map((p) => p.memory),
        borderColor: theme.palette.secondary.main,
        backgroundColor: theme.palette.secondary.main,
        borderDash: [6, 3],
        tension: 0.3,
        pointRadius: 2,
      },
    ],
  };
  const options: ChartOptions<'line'> = {
    responsive: true,
    maintainAspectRatio: false,
    animation: false,
    interaction: { mode: 'index', intersect: false },
    scales: {
      y: { min: 0, max: 100, ticks: { color: text, callback: (v) => `${v} %` }, grid: { color: grid } },
      x: { ticks: { color: text, maxRotation: 0, autoSkipPadding: 16 }, grid: { color: grid } },
    },
    plugins: { legend: { labels: { color: theme.palette.text.primary } } },
  };
  return (
    <div style={{ position: 'relative', height: 280 }}>
      <Line data={data} options={options} role="img" aria-label={describe(host, points)} />
    </div>
  );
}
