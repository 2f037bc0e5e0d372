import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import { logicalId, synthStage } from './helpers';

const { template, stage } = synthStage('dev');
const alarms = template.findResources('AWS::CloudWatch::Alarm');
const topicId = logicalId(template, 'AWS::SNS::Topic', 'ObservabilityAlarmTopic');

function alarm(name: string) {
  const found = Object.values(alarms).find((a) => a.Properties.AlarmName === `orderpipe-dev-${name}`);
  assert.ok(found, `alarm ${name}`);
  return found.Properties;
}

test('alarm topic is KMS-encrypted and CloudWatch may use the key', () => {
  template.hasResourceProperties('AWS::SNS::Topic', { KmsMasterKeyId: { 'Fn::GetAtt': [logicalId(template, 'AWS::KMS::Key', 'DataKey'), 'Arn'] } });
  const key = Object.values(template.findResources('AWS::KMS::Key'))[0].Properties;
  const forCloudWatch = key.KeyPolicy.Statement.find((s: any) => s.Principal?.Service === 'cloudwatch.amazonaws.com');
  assert.ok(forCloudWatch);
  assert.deepEqual(forCloudWatch.Action, ['kms:Decrypt', 'kms:GenerateDataKey*']);
});

test('every alarm notifies the topic on alarm and on recovery', () => {
  assert.ok(Object.keys(alarms).length >= 10);
  for (const a of Object.values(alarms)) {
    assert.deepEqual(a.Properties.AlarmActions, [{ Ref: topicId }], a.Properties.AlarmName);
    assert.deepEqual(a.Properties.OKActions, [{ Ref: topicId }], a.Properties.AlarmName);
  }
});

test('Kinesis iterator age (projector lag)', () => {
  const a = alarm('kinesis-iterator-age');
  assert.equal(a.Namespace, 'AWS/Kinesis');
  assert.equal(a.MetricName, 'GetRecords.IteratorAgeMilliseconds');
  assert.equal(a.Statistic, 'Maximum');
  assert.equal(a.Threshold, stage.alarms.iteratorAgeMs);
  assert.equal(a.ComparisonOperator, 'GreaterThanThreshold');
});

test('depth of every dead-letter queue', () => {
  for (const [name, queue] of [
    ['intake', 'orderpipe-dev-intake-dlq'],
    ['payments', 'orderpipe-dev-payments-dlq.fifo'],
    ['notifications', 'orderpipe-dev-notifications-dlq'],
    ['projector', 'orderpipe-dev-projector-dlq'],
  ]) {
    const a = alarm(`${name}-dlq-depth`);
    assert.equal(a.Namespace, 'AWS/SQS');
    assert.equal(a.MetricName, 'ApproximateNumberOfMessagesVisible');
    assert.equal(a.Threshold, 0);
    assert.equal(a.ComparisonOperator, 'GreaterThanThreshold');
    const queueDimension = a.Dimensions.find((d: any) => d.Name === 'QueueName');
    const queueId = Object.entries(template.findResources('AWS::SQS::Queue')).find(([, q]) => q.Properties.QueueName === queue)![0];
    assert.deepEqual(queueDimension.Value, { 'Fn::GetAtt': [queueId, 'QueueName'] });
  }
});

test('lag of each consuming service: the projectors and the flows\' saga and notifications groups', () => {
  for (const service of ['projectors', 'flows-log']) {
    const a = alarm(`${service}-consumer-lag`);
    assert.equal(a.Namespace, 'Orderpipe');
    assert.equal(a.MetricName, 'ConsumerLagMillis');
    assert.equal(a.Statistic, 'Maximum');
    assert.deepEqual(a.Dimensions, [
      { Name: 'Service', Value: service },
      { Name: 'Stage', Value: 'dev' },
    ]);
    assert.equal(a.Threshold, stage.alarms.iteratorAgeMs);
    assert.equal(a.TreatMissingData, 'breaching');
  }
});

test('outbox backlog from the relay; missing data is breaching (relay down)', () => {
  const a = alarm('outbox-backlog');
  assert.equal(a.Namespace, 'Orderpipe');
  assert.equal(a.MetricName, 'OutboxBacklog');
  assert.deepEqual(a.Dimensions, [
    { Name: 'Service', Value: 'relay' },
    { Name: 'Stage', Value: 'dev' },
  ]);
  assert.equal(a.Threshold, stage.alarms.outboxBacklog);
  assert.equal(a.TreatMissingData, 'breaching');
});

test('command API errors, load balancer 5xx and healthy gRPC targets', () => {
  const errors = alarm('command-errors');
  assert.equal(errors.Namespace, 'Orderpipe');
  assert.equal(errors.MetricName, 'CommandErrors');
  // Number of observations of the command-duration histogram with outcome="error".
  assert.equal(errors.Statistic, 'SampleCount');
  assert.equal(errors.Period, 300);
  assert.equal(alarm('lb-5xx').MetricName, 'HTTPCode_ELB_5XX_Count');
  assert.equal(alarm('target-5xx').MetricName, 'HTTPCode_Target_5XX_Count');
  for (const name of ['command-api', 'dashboard']) {
    const healthy = alarm(`${name}-healthy-hosts`);
    assert.equal(healthy.MetricName, 'HealthyHostCount');
    assert.equal(healthy.ComparisonOperator, 'LessThanThreshold');
  }
});

test('pipeline dashboard shows the alarms, the log, the queues and the services', () => {
  const dashboards = Object.values(template.findResources('AWS::CloudWatch::Dashboard'));
  assert.equal(dashboards.length, 1);
  assert.equal(dashboards[0].Properties.DashboardName, 'orderpipe-dev-pipeline');
  const body = JSON.stringify(dashboards[0].Properties.DashboardBody);
  for (const expected of ['GetRecords.IteratorAgeMilliseconds', 'OutboxBacklog', 'CommandErrors', 'ApproximateNumberOfMessagesVisible', 'CPUUtilization', 'ServerlessDatabaseCapacity', 'ObservabilityKinesisIteratorAge', 'ConsumerLagMillis', 'orderpipe-dev-flows-payments', 'orderpipe-dev-flows-log', 'orderpipe-dev-dashboard', 'HealthyHostCount']) {
    assert.ok(body.includes(expected), `dashboard lacks ${expected}`);
  }
});

test('the active-orders view alarms follow a replay swap: they select tables by tag, not by name', () => {
  for (const [name, metric] of [
    ['active-orders-throttles', 'ThrottledRequests'],
    ['active-orders-system-errors', 'SystemErrors'],
  ]) {
    const a = alarm(name);
    assert.equal(a.Metrics.length, 1);
    const query: string = a.Metrics[0].Expression;
    assert.match(query, new RegExp(`^SELECT SUM\\(${metric}\\) FROM SCHEMA\\("AWS/DynamoDB", TableName, Operation\\)`));
    assert.match(query, /WHERE tag\.OrderpipeView = 'active-orders'$/);
    assert.ok(!query.includes('orderpipe-dev-active-orders'), 'names no table');
    assert.equal(a.Threshold, 0);
  }
  for (const table of ['orderpipe-dev-active-orders', 'orderpipe-dev-store-metrics']) {
    const found = Object.values(template.findResources('AWS::DynamoDB::Table')).find((t) => t.Properties.TableName === table);
    assert.ok(found, table);
    assert.deepEqual(
      found.Properties.Tags.filter((tag: any) => tag.Key === 'OrderpipeView'),
      [{ Key: 'OrderpipeView', Value: 'active-orders' }],
      table,
    );
  }
});
