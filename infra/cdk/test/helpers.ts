import * as fs from 'node:fs';
import * as path from 'node:path';
import { Template } from 'aws-cdk-lib/assertions';
import { buildApp } from '../lib/app';

// Tests never talk to AWS: a fixed fake account and region, no instance-metadata probing.
process.env.AWS_EC2_METADATA_DISABLED = 'true';
export const TEST_ACCOUNT = '123456789012';
export const TEST_REGION = 'us-east-1';

/** The context `cdk synth` uses, read from cdk.json, so tests see what the CLI synthesises. */
export const CDK_CONTEXT: Record<string, unknown> = JSON.parse(
  fs.readFileSync(path.join(__dirname, '..', 'cdk.json'), 'utf8'),
).context;

/** Synthesises one stage (once per test file: callers keep the result for all assertions). */
export function synthStage(stage: string, options: { nag?: boolean; context?: Record<string, unknown> } = {}) {
  const built = buildApp(
    { context: { ...CDK_CONTEXT, stage, account: TEST_ACCOUNT, region: TEST_REGION, ...options.context } },
    { nag: options.nag ?? false },
  );
  const template = Template.fromStack(built.stack);
  return { ...built, template };
}

type Resources = Record<string, { Type: string; Properties?: any; Metadata?: any; DeletionPolicy?: string }>;

/** Logical id of the one resource of `type` whose logical id starts with `prefix`. */
export function logicalId(template: Template, type: string, prefix: string): string {
  const ids = Object.keys(template.findResources(type)).filter((id) => id.startsWith(prefix));
  if (ids.length !== 1) throw new Error(`expected one ${type} starting with ${prefix}, found ${ids.join(', ') || 'none'}`);
  return ids[0];
}

/** Every IAM statement attached (inline policies) to the role with this logical id. */
export function statementsOfRole(template: Template, roleId: string): Array<{ Action: string | string[]; Resource: unknown; Effect: string }> {
  const policies = template.findResources('AWS::IAM::Policy') as Resources;
  return Object.values(policies)
    .filter((p) => (p.Properties.Roles as Array<{ Ref: string }>).some((r) => r.Ref === roleId))
    .flatMap((p) => p.Properties.PolicyDocument.Statement);
}

/** All actions a role is allowed. */
export function actionsOfRole(template: Template, roleId: string): string[] {
  return statementsOfRole(template, roleId)
    .flatMap((s) => (Array.isArray(s.Action) ? s.Action : [s.Action]))
    .sort();
}

/** Logical ids referenced anywhere inside a value (Ref and Fn::GetAtt). */
export function referencedIds(value: unknown): string[] {
  const json = JSON.stringify(value);
  const ids = new Set<string>();
  for (const m of json.matchAll(/"Ref":"([A-Za-z0-9]+)"/g)) ids.add(m[1]);
  for (const m of json.matchAll(/"Fn::GetAtt":\["([A-Za-z0-9]+)"/g)) ids.add(m[1]);
  return [...ids];
}
