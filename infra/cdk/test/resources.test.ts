import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import { CONFIG_KEYS } from '../lib/config';
import { RESOURCES } from '../lib/resources';
import { referencedIds, synthStage } from './helpers';

// The deployment against what the Rust code declares (resources.json, generated from the code):
// a table, queue or stream the code uses exists with the shape the code relies on, and its
// name or URL reaches the services through the settings key the code reads.
const { template } = synthStage('dev');
const prefix = 'orderpipe-dev';

function named(type: string, nameProperty: string, name: string) {
  const found = Object.entries(template.findResources(type)).filter(([, r]) => r.Properties[nameProperty] === name);
  assert.equal(found.length, 1, `${type} ${name}: ${found.length} in the template`);
  return { id: found[0][0], props: found[0][1].Properties };
}

test('every declared table exists with the declared keys, indexes and TTL', () => {
  assert.ok(RESOURCES.tables.length > 0);
  for (const declared of RESOURCES.tables) {
    const { props } = named('AWS::DynamoDB::Table', 'TableName', `${prefix}-${declared.name}`);
    const keySchema = [{ AttributeName: declared.hash.name, KeyType: 'HASH' }];
    if (declared.range) keySchema.push({ AttributeName: declared.range.name, KeyType: 'RANGE' });
    assert.deepEqual(props.KeySchema, keySchema, declared.name);
    const types = Object.fromEntries(props.AttributeDefinitions.map((a: any) => [a.AttributeName, a.AttributeType]));
    assert.equal(types[declared.hash.name], declared.hash.kind, `${declared.name} ${declared.hash.name}`);
    if (declared.range) assert.equal(types[declared.range.name], declared.range.kind, `${declared.name} ${declared.range.name}`);
    const indexes = (props.GlobalSecondaryIndexes ?? []).map((index: any) => ({
      name: index.IndexName,
      hash: index.KeySchema[0].AttributeName,
      range: index.KeySchema[1]?.AttributeName,
      projection: index.Projection.ProjectionType,
    }));
    const byName = (a: { name: string }, b: { name: string }) => a.name.localeCompare(b.name);
    assert.deepEqual(
      indexes.sort(byName),
      declared.indexes.map((i) => ({ ...i, projection: 'ALL' })).sort(byName),
      `${declared.name} indexes`,
    );
    for (const index of declared.indexes) assert.equal(types[index.hash], 'S', `${declared.name} ${index.hash}`);
    assert.deepEqual(
      props.TimeToLiveSpecification,
      declared.time_to_live ? { AttributeName: declared.time_to_live, Enabled: true } : undefined,
      `${declared.name} TTL`,
    );
  }
  assert.equal(Object.keys(template.findResources('AWS::DynamoDB::Table')).length, RESOURCES.tables.length);
});

test('every declared queue exists, FIFO as declared, redriving to its dead-letter queue after the declared receives', () => {
  let queues = 0;
  for (const declared of RESOURCES.queues) {
    const dlq = named('AWS::SQS::Queue', 'QueueName', `${prefix}-${declared.dead_letter_name}`);
    assert.equal(dlq.props.FifoQueue, declared.fifo ? true : undefined, declared.dead_letter_name);
    assert.equal(dlq.props.RedrivePolicy, undefined, `${declared.dead_letter_name} is the end of the line`);
    queues += 1;
    if (declared.queue_name === null) continue;
    const queue = named('AWS::SQS::Queue', 'QueueName', `${prefix}-${declared.queue_name}`);
    assert.equal(queue.props.FifoQueue, declared.fifo ? true : undefined, declared.queue_name);
    assert.equal(queue.props.RedrivePolicy.maxReceiveCount, declared.max_receive_count, declared.queue_name);
    assert.deepEqual(referencedIds(queue.props.RedrivePolicy.deadLetterTargetArn), [dlq.id], declared.queue_name);
    queues += 1;
  }
  assert.equal(Object.keys(template.findResources('AWS::SQS::Queue')).length, queues);
});

test('the declared stream exists', () => {
  for (const declared of RESOURCES.streams) named('AWS::Kinesis::Stream', 'Name', `${prefix}-${declared.name}`);
});

test('every declared resource reaches the services through the settings key the code reads', () => {
  const configured = new Set(CONFIG_KEYS.map((k) => k.key));
  const keys = [
    ...RESOURCES.streams.map((s) => s.env),
    ...RESOURCES.tables.map((t) => t.env),
    ...RESOURCES.queues.flatMap((q) => [q.queue_url_env, q.dead_letter_url_env].filter((k): k is string => k !== null)),
  ];
  for (const key of keys) assert.ok(configured.has(key), `no service is given ${key}`);
});
