import { useTheme } from '@mui/material/styles';

/** The Medbay cross; decorative (the name always stands beside it). */
export function Logo({ size = 32 }: { size?: number }) {
  const theme = useTheme();
  return (
    <svg width={size} height={size} viewBox="0 0 32 32" aria-hidden="true" focusable="false">
      <rect width="32" height="32" rx="7" fill={theme.palette.mode === 'dark' ? '#0b1020' : '#e3f4f7'} />
      <path d="M13 6h6v7h7v6h-7v7h-6v-7H6v-6h7z" fill={theme.palette.primary.main} />
    </svg>
  );
}
