import { App, AppProps, Aspects, Tags } from 'aws-cdk-lib';
import { AwsSolutionsChecks } from 'cdk-nag';
import { OrderpipeStack } from './orderpipe-stack';
import { loadStageConfig } from './stage';

/** Builds the app for the stage named in context; used by bin/orderpipe.ts and by the tests. */
export function buildApp(props: AppProps = {}, options: { nag?: boolean } = {}) {
  const app = new App(props);
  const stage = loadStageConfig(app.node, process.env.CDK_DEFAULT_REGION);
  const account = app.node.tryGetContext('account') ?? process.env.CDK_DEFAULT_ACCOUNT;
  const stack = new OrderpipeStack(app, `Orderpipe-${stage.name}`, {
    stage,
    env: { account, region: stage.region },
    description: `orderpipe event-sourced order pipeline (${stage.name})`,
    terminationProtection: stage.deletionProtection,
  });
  Tags.of(app).add('project', 'orderpipe');
  Tags.of(app).add('stage', stage.name);
  if (options.nag ?? true) {
    Aspects.of(app).add(new AwsSolutionsChecks({ verbose: true }));
  }
  return { app, stack, stage };
}
