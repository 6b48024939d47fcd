import { useBreakers, useLabReport, usePlannerModel } from '../../api/queries';
import { PageHeader } from '../../components/PageHeader';
import { QueryStatus } from '../../components/QueryStatus';
import { Section } from '../../components/Section';
import { Breakers } from './Breakers';
import { LabResults } from './LabResults';
import { ModelCard } from './ModelCard';
import { SuccessRates } from './SuccessRates';

/** How the planner decides and how well its actions work, in the lab and live; the
 * executor's breakers. */
export default function AutomationPage() {
  const model = usePlannerModel();
  const lab = useLabReport();
  const breakers = useBreakers();
  return (
    <>
      <PageHeader title="Automation" />
      <Section title="Planner model" id="model-title">
        <QueryStatus isPending={model.isPending} error={model.error} what="planner model" />
        {model.data && <ModelCard model={model.data} />}
      </Section>
      <Section title="Lab results" id="lab-title">
        <QueryStatus isPending={lab.isPending} error={lab.error} what="lab results" />
        {lab.data && <LabResults lab={lab.data} />}
      </Section>
      <Section title="Success rate per action" id="rates-title">
        {model.data && <SuccessRates rates={model.data.success_rates} />}
      </Section>
      <Section title="Breakers" id="breakers-title">
        <QueryStatus isPending={breakers.isPending} error={breakers.error} what="breakers" />
        {breakers.data && <Breakers breakers={breakers.data} />}
      </Section>
    </>
  );
}
