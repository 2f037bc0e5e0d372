import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import { Annotations, Match } from 'aws-cdk-lib/assertions';
import { synthStage } from './helpers';

// The two stages come from the same code and differ only by cdk.json context.
const dev = synthStage('dev', { nag: true });
const prod = synthStage('prod', { nag: true, context: { imageTag: 'abc1234' } });

for (const { stage, stack } of [dev, prod]) {
  test(`cdk-nag AwsSolutions: no unsuppressed error in ${stage.name}`, () => {
    const errors = Annotations.fromStack(stack).findError('*', Match.stringLikeRegexp('AwsSolutions-.*'));
    assert.deepEqual(errors.map((e) => `${e.id}: ${e.entry.data}`), []);
  });
  test(`cdk-nag AwsSolutions: no unsuppressed warning in ${stage.name}`, () => {
    const warnings = Annotations.fromStack(stack).findWarning('*', Match.stringLikeRegexp('AwsSolutions-.*'));
    assert.deepEqual(warnings.map((e) => `${e.id}: ${e.entry.data}`), []);
  });
  test(`cdk-nag could evaluate every rule in ${stage.name}`, () => {
    const failures = Annotations.fromStack(stack).findWarning('*', Match.stringLikeRegexp('CdkNagValidationFailure'));
    assert.deepEqual(failures.map((e) => `${e.id}: ${e.entry.data}`), []);
  });
}

test('every nag suppression carries a real justification', () => {
  const reasons: string[] = [];
  for (const { template } of [dev, prod]) {
    for (const resource of Object.values(template.toJSON().Resources) as any[]) {
      for (const rule of resource.Metadata?.cdk_nag?.rules_to_suppress ?? []) {
        assert.ok(rule.reason.length >= 60, `${rule.id}: "${rule.reason}" is too thin`);
        reasons.push(rule.id);
      }
    }
  }
  const allowed = ['AwsSolutions-ECS2', 'AwsSolutions-IAM5', 'AwsSolutions-RDS10', 'AwsSolutions-RDS11', 'AwsSolutions-S1', 'AwsSolutions-SMG4', 'AwsSolutions-SQS3'];
  assert.deepEqual([...new Set(reasons)].sort(), allowed);
});

test('prod keeps its data: retained tables, stream, queues, key; snapshotted Aurora with deletion protection', () => {
  const p = prod.template;
  for (const type of ['AWS::DynamoDB::Table', 'AWS::Kinesis::Stream', 'AWS::SQS::Queue', 'AWS::KMS::Key', 'AWS::RedshiftServerless::Namespace']) {
    for (const r of Object.values(p.findResources(type))) assert.equal(r.DeletionPolicy, 'Retain', type);
  }
  const cluster = Object.values(p.findResources('AWS::RDS::DBCluster'))[0];
  assert.equal(cluster.DeletionPolicy, 'Snapshot');
  assert.equal(cluster.Properties.DeletionProtection, true);
  assert.equal(cluster.Properties.BackupRetentionPeriod, 35);
  for (const t of Object.values(p.findResources('AWS::DynamoDB::Table'))) assert.equal(t.Properties.DeletionProtectionEnabled, true);
  assert.equal(prod.stack.terminationProtection, true);
  assert.equal(dev.stack.terminationProtection, false);
});

test('prod is sized from context: NAT per zone, Aurora reader, larger Redshift, more tasks, autoscaling', () => {
  const p = prod.template;
  p.resourceCountIs('AWS::EC2::NatGateway', 3);
  dev.template.resourceCountIs('AWS::EC2::NatGateway', 1);
  p.resourceCountIs('AWS::RDS::DBInstance', 2);
  p.hasResourceProperties('AWS::RDS::DBCluster', { ServerlessV2ScalingConfiguration: { MinCapacity: 2, MaxCapacity: 64 } });
  p.hasResourceProperties('AWS::RedshiftServerless::Workgroup', { BaseCapacity: 32 });
  p.hasResourceProperties('AWS::ECS::Service', { ServiceName: 'orderpipe-prod-command-api', DesiredCount: 3 });
  p.hasResourceProperties('AWS::ApplicationAutoScaling::ScalableTarget', { MinCapacity: 3, MaxCapacity: 24 });
  p.hasResourceProperties('AWS::Logs::LogGroup', { LogGroupName: '/orderpipe-prod/command-api', RetentionInDays: 90 });
  p.hasResourceProperties('AWS::CloudWatch::Alarm', { AlarmName: 'orderpipe-prod-kinesis-iterator-age', Threshold: 60000 });
  p.hasResourceProperties('AWS::ElasticLoadBalancingV2::LoadBalancer', {
    LoadBalancerAttributes: Match.arrayWith([{ Key: 'deletion_protection.enabled', Value: 'true' }]),
  });
});

test('context overrides reach the services: image tag and DNS names', () => {
  const image = JSON.stringify(
    Object.values(prod.template.findResources('AWS::ECS::TaskDefinition')).map((t) => t.Properties.ContainerDefinitions[0].Image),
  );
  assert.ok(image.includes('/orderpipe/relay:abc1234'));
  prod.template.hasResourceProperties('AWS::CertificateManager::Certificate', {
    DomainName: 'api.orderpipe.example.com',
    SubjectAlternativeNames: ['dashboard.orderpipe.example.com'],
  });
});
