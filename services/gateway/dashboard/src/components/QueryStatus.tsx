import Alert from '@mui/material/Alert';
import LinearProgress from '@mui/material/LinearProgress';

interface QueryStatusProps {
  isPending: boolean;
  error: Error | null;
  /** What is loading, for screen readers: "incidents". */
  what: string;
}

/** A loading bar or the error of a query, or nothing once there is data. */
export function QueryStatus({ isPending, error, what }: QueryStatusProps) {
  if (error) {
    return (
      <Alert severity="error" sx={{ my: 1 }}>
        Could not load the {what}: {error.message}
      </Alert>
    );
  }
  if (isPending) return <LinearProgress aria-label={`Loading the ${what}`} sx={{ my: 1 }} />;
  return null;
}
