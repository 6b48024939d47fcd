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
import type { RedPoint } from '../../api/types';
import { formatTime } from '../../lib/format';
import { formatMs, formatPerSecond } from '../../lib/traces';
import { describeRed, redLines, type RedChartKind } from './redSeries';

ChartJS.register(CategoryScale, LinearScale, PointElement, LineElement, Tooltip, Legend);

interface RedChartProps {
  kind: RedChartKind;
  service: string;
  history: RedPoint[];
}

/** A service's request and error rates, or its latency percentiles, over its history. */
export function RedChart({ kind, service, history }: RedChartProps) {
  const theme = useTheme();
  const text = theme.palette.text.secondary;
  const grid = theme.palette.divider;
  const data: ChartData<'line', (number | null)[], string> = {
    labels: history.map((p) => formatTime(p.at)),
    datasets: redLines(kind, history).map((line) => ({
      label: line.label,
      data: line.values,
      borderColor: theme.palette[line.tone].main,
      backgroundColor: theme.palette[line.tone].main,
      borderDash: line.dashed ? [6, 3] : [],
      tension: 0.3,
      pointRadius: 1.5,
      spanGaps: true,
    })),
  };
  const tick = kind === 'rates' ? formatPerSecond : formatMs;
  const options: ChartOptions<'line'> = {
    responsive: true,
    maintainAspectRatio: false,
    animation: false,
    interaction: { mode: 'index', intersect: false },
    scales: {
      y: { min: 0, ticks: { color: text, callback: (v) => tick(Number(v)) }, grid: { color: grid } },
      x: { ticks: { color: text, maxRotation: 0, autoSkipPadding: 16 }, grid: { color: grid } },
    },
    plugins: { legend: { labels: { color: theme.palette.text.primary, boxWidth: 18 } } },
  };
  return (
    <div style={{ position: 'relative', height: 180 }} data-chart={kind}>
      <Line data={data} options={options} role="img" aria-label={describeRed(kind, service, history)} />
    </div>
  );
}
