import Box from '@mui/material/Box';
import Card from '@mui/material/Card';
import CardContent from '@mui/material/CardContent';
import Typography from '@mui/material/Typography';
import type { PlannerModel } from '../../api/types';
import { formatDateTime, formatPercent } from '../../lib/format';

function Fact({ label, value }: { label: string; value: string }) {
  return (
    <Box>
      <Typography component="dt" variant="body2" color="text.secondary">
        {label}
      </Typography>
      <Typography component="dd" variant="h3" sx={{ m: 0 }}>
        {value}
      </Typography>
    </Box>
  );
}

const LEARNED_FROM = { live: 'Live outcomes', lab: 'Lab runs', unknown: '—' } as const;

/** The planner's current model: which, how accurate on held-out outcomes, when trained, and
 * whether it learned from live outcomes or in the lab (`medbay lab`). */
export function ModelCard({ model }: { model: PlannerModel }) {
  if (model.version === null) {
    return (
      <Card>
        <CardContent>
          <Typography>
            No trained model yet: the planner plans by its rule table until it has enough outcomes to learn
            from.
          </Typography>
        </CardContent>
      </Card>
    );
  }
  const outcomes = [model.training_outcomes, model.holdout_outcomes];
  return (
    <Card>
      <CardContent>
        <Box
          component="dl"
          sx={{ m: 0, display: 'grid', gap: 2, gridTemplateColumns: 'repeat(auto-fill, minmax(180px, 1fr))' }}
        >
          <Fact label="Version" value={model.version} />
          <Fact
            label="Validation accuracy"
            value={model.validation_accuracy === null ? '—' : formatPercent(model.validation_accuracy * 100)}
          />
          <Fact label="Trained" value={model.trained_at === null ? '—' : formatDateTime(model.trained_at)} />
          <Fact label="Learned from" value={LEARNED_FROM[model.trained_on ?? 'unknown']} />
          <Fact
            label="Outcomes (training / held out)"
            value={outcomes.map((n) => (n === null ? '—' : String(n))).join(' / ')}
          />
        </Box>
      </CardContent>
    </Card>
  );
}
