import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import { logicalId, referencedIds, synthStage } from './helpers';

const { template } = synthStage('dev');
const kmsKeyId = logicalId(template, 'AWS::KMS::Key', 'DataKey');

function queue(name: string) {
  const found = Object.entries(template.findResources('AWS::SQS::Queue')).filter(([, q]) => q.Properties.QueueName === name);
  assert.equal(found.length, 1, `queue ${name}`);
  return { id: found[0][0], props: found[0][1].Properties };
}

test('Kinesis event stream: on-demand, KMS-encrypted, 7-day retention', () => {
  template.hasResourceProperties('AWS::Kinesis::Stream', {
    Name: 'orderpipe-dev-events',
    StreamModeDetails: { StreamMode: 'ON_DEMAND' },
    StreamEncryption: { EncryptionType: 'KMS', KeyId: 'alias/aws/kinesis' },
    RetentionPeriodHours: 168,
  });
});

test('intake, payments (FIFO), notifications and purchase orders (FIFO) each redrive to their own DLQ after 5 receives', () => {
  for (const [name, dlq] of [
    ['orderpipe-dev-intake', 'orderpipe-dev-intake-dlq'],
    ['orderpipe-dev-payments.fifo', 'orderpipe-dev-payments-dlq.fifo'],
    ['orderpipe-dev-notifications', 'orderpipe-dev-notifications-dlq'],
    ['orderpipe-dev-purchase-orders.fifo', 'orderpipe-dev-purchase-orders-dlq.fifo'],
  ]) {
    const q = queue(name);
    const d = queue(dlq);
    assert.equal(q.props.RedrivePolicy.maxReceiveCount, 5);
    assert.deepEqual(referencedIds(q.props.RedrivePolicy.deadLetterTargetArn), [d.id]);
    assert.equal(d.props.MessageRetentionPeriod, 14 * 24 * 3600);
  }
});

test('payments is a high-throughput FIFO queue with a FIFO DLQ', () => {
  const payments = queue('orderpipe-dev-payments.fifo').props;
  assert.equal(payments.FifoQueue, true);
  assert.equal(payments.ContentBasedDeduplication, true);
  assert.equal(payments.DeduplicationScope, 'messageGroup');
  assert.equal(payments.FifoThroughputLimit, 'perMessageGroupId');
  assert.equal(queue('orderpipe-dev-payments-dlq.fifo').props.FifoQueue, true);
  assert.equal(queue('orderpipe-dev-intake').props.FifoQueue, undefined);
});

test('projector dead-letter queue for malformed log records', () => {
  queue('orderpipe-dev-projector-dlq');
});

test('every queue is KMS-encrypted and refuses non-TLS access', () => {
  const queues = template.findResources('AWS::SQS::Queue');
  assert.equal(Object.keys(queues).length, 9);
  for (const q of Object.values(queues)) assert.deepEqual(referencedIds(q.Properties.KmsMasterKeyId), [kmsKeyId]);
  const policies = Object.values(template.findResources('AWS::SQS::QueuePolicy'));
  const protectedQueues = new Set<string>();
  for (const p of policies) {
    const denies = p.Properties.PolicyDocument.Statement.filter(
      (s: any) => s.Effect === 'Deny' && s.Condition?.Bool?.['aws:SecureTransport'] === 'false',
    );
    if (denies.length) referencedIds(p.Properties.Queues).forEach((id) => protectedQueues.add(id));
  }
  assert.deepEqual([...protectedQueues].sort(), Object.keys(queues).sort());
});
