import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Node } from 'constructs';
import { App } from 'aws-cdk-lib';
import { CONFIG_KEYS, keysOf, PROCESS_NAMES, SERVICE_NAMES, SERVICES } from '../lib/config';
import { configTableMarkdown } from '../lib/config-doc';
import { collectorConfig } from '../lib/services';
import { loadStageConfig } from '../lib/stage';
import { CDK_CONTEXT } from './helpers';

const node = (context: Record<string, unknown>): Node => new App({ context: { ...CDK_CONTEXT, ...context } }).node;

test('every config key reaches at least one process, and every key is unique', () => {
  const given = new Set(PROCESS_NAMES.flatMap(keysOf));
  for (const key of CONFIG_KEYS) assert.ok(given.has(key.key), `${key.key} is set for no service`);
  assert.equal(new Set(CONFIG_KEYS.map((k) => k.key)).size, CONFIG_KEYS.length);
});

test('config keys follow the ORDERPIPE_<SECTION>__<KEY> convention', () => {
  for (const { key } of CONFIG_KEYS) {
    if (key === 'AWS_REGION') continue;
    assert.match(key, /^ORDERPIPE_([A-Z]+(_[A-Z]+)*__)+[A-Z]+(_[A-Z]+)*$/, key);
  }
});

test('DEPLOYING.md documents every config key and every service', () => {
  const doc = fs.readFileSync(path.join(__dirname, '..', 'DEPLOYING.md'), 'utf8');
  for (const { key } of CONFIG_KEYS) assert.ok(doc.includes(key), `DEPLOYING.md lacks ${key}`);
  for (const name of PROCESS_NAMES) assert.ok(doc.includes(`\`${name}\``), `DEPLOYING.md lacks ${name}`);
  assert.ok(doc.includes(configTableMarkdown()), 'the table in DEPLOYING.md is stale: npm run --silent docs:config-table');
});

test('services that call the command API also get the JWT settings to sign their tokens', () => {
  for (const name of PROCESS_NAMES) {
    if (SERVICES[name].capabilities.includes('commandApiClient')) assert.ok(keysOf(name).includes('ORDERPIPE_AUTH__JWT_SECRET'), name);
  }
});

test('stage config: unknown stage and missing keys are refused with a clear message', () => {
  assert.throws(() => loadStageConfig(node({ stage: 'qa' }), 'us-east-1'), /unknown stage 'qa': expected one of dev, prod/);
  assert.throws(() => loadStageConfig(node({ stage: 'dev', imageTag: '' }), 'us-east-1'), /missing CDK context value: imageTag/);
  assert.throws(() => loadStageConfig(node({ stage: 'dev', availabilityZones: 'us-east-1a,us-east-1b' }), 'us-east-1'), /three availability zones/);
  const prod = loadStageConfig(node({ stage: 'prod', region: 'eu-west-1' }), 'us-east-1');
  assert.deepEqual(prod.availabilityZones, ['eu-west-1a', 'eu-west-1b', 'eu-west-1c']);
  assert.equal(prod.prefix, 'orderpipe-prod');
});

test('collector config renames the Prometheus series into the Orderpipe namespace', () => {
  const config = JSON.parse(
    collectorConfig({
      service: 'relay',
      stage: 'dev',
      region: 'us-east-1',
      logGroupName: '/orderpipe-dev/metrics',
      metrics: SERVICES.relay.publishedMetrics!,
    }),
  );
  const transform = config.processors.metricstransform.transforms[0];
  assert.equal(transform.include, 'orderpipe_outbox_backlog');
  assert.equal(transform.new_name, 'OutboxBacklog');
  assert.deepEqual(config.processors['filter/published'].metrics, { metric: ['not IsMatch(name, "^(orderpipe_outbox_backlog)$")'] });
  assert.deepEqual(config.exporters.awsemf.metric_declarations[0].dimensions, [['Stage', 'Service']]);
  assert.deepEqual(config.service.pipelines.metrics.exporters, ['awsemf']);
});

test('CommandErrors counts the command-duration observations whose outcome is error', () => {
  const config = JSON.parse(
    collectorConfig({
      service: 'command-api',
      stage: 'prod',
      region: 'us-east-1',
      logGroupName: '/orderpipe-prod/metrics',
      metrics: SERVICES['command-api'].publishedMetrics!,
    }),
  );
  assert.deepEqual(config.processors['filter/published'].metrics, {
    metric: ['not IsMatch(name, "^(orderpipe_command_duration_seconds)$")'],
    datapoint: ['metric.name == "orderpipe_command_duration_seconds" and attributes["outcome"] != "error"'],
  });
  assert.equal(config.processors.metricstransform.transforms[0].new_name, 'CommandErrors');
});

test('listeners bind all interfaces only where the load balancer must reach them', () => {
  assert.ok(keysOf('command-api').includes('ORDERPIPE_GRPC__HOST'));
  assert.ok(keysOf('dashboard').includes('ORDERPIPE_HTTP__HOST'));
  for (const name of SERVICE_NAMES.filter((n) => !SERVICES[n].ingress)) {
    assert.ok(!keysOf(name).some((k) => k.endsWith('__HOST') && !k.includes('DATABASE') && k !== 'ORDERPIPE_ADMIN__HOST'), name);
  }
  // Nothing outside the task calls the admin endpoint: it stays on loopback in every service.
  const adminHost = CONFIG_KEYS.find((k) => k.key === 'ORDERPIPE_ADMIN__HOST')!;
  for (const name of SERVICE_NAMES) assert.ok(keysOf(name).includes('ORDERPIPE_ADMIN__HOST'), name);
  assert.equal(adminHost.plain!({} as never, SERVICES.relay), '127.0.0.1');
});

const database = (prefix: string) => ['HOST', 'PORT', 'NAME', 'USERNAME', 'PASSWORD'].map((k) => `${prefix}${k}`);
const common = ['ORDERPIPE_LOG__FORMAT', 'ORDERPIPE_ADMIN__HOST', 'ORDERPIPE_ADMIN__PORT'];

// The keys the built binaries read without a default in code (their Settings structs), and nothing else.
test('command-api gets exactly what command-api/src/settings.rs needs (no AWS SDK, so no AWS_REGION)', () => {
  assert.deepEqual(
    keysOf('command-api').sort(),
    [
      ...common,
      'ORDERPIPE_GRPC__HOST',
      'ORDERPIPE_GRPC__PORT',
      ...database('ORDERPIPE_DATABASE__'),
      'ORDERPIPE_AUTH__JWT_SECRET',
      'ORDERPIPE_AUTH__ISSUER',
      'ORDERPIPE_AUTH__AUDIENCE',
    ].sort(),
  );
  assert.deepEqual(SERVICES['command-api'].command, ['serve']);
});

test('relay gets exactly what crates/log/relay/src/settings.rs needs', () => {
  assert.deepEqual(
    keysOf('relay').sort(),
    ['AWS_REGION', ...common, ...database('ORDERPIPE_DATABASE__'), 'ORDERPIPE_KINESIS__STREAM_NAME'].sort(),
  );
  assert.deepEqual(SERVICES.relay.command, ['run']);
});

test('projectors get exactly what projectors/src/settings.rs needs (schemas default in code)', () => {
  assert.deepEqual(
    keysOf('projectors').sort(),
    [
      'AWS_REGION',
      ...common,
      'ORDERPIPE_KINESIS__STREAM_NAME',
      'ORDERPIPE_DYNAMODB__LEASES_TABLE',
      'ORDERPIPE_DYNAMODB__PARKED_TABLE',
      'ORDERPIPE_DYNAMODB__ACTIVE_ORDERS_TABLE',
      'ORDERPIPE_DYNAMODB__STORE_METRICS_TABLE',
      'ORDERPIPE_DYNAMODB__VIEWS_TABLE',
      'ORDERPIPE_SQS__PROJECTOR_DLQ_URL',
      ...database('ORDERPIPE_HISTORY__DATABASE__'),
      ...database('ORDERPIPE_ANALYTICS__DATABASE__'),
    ].sort(),
  );
  assert.deepEqual(SERVICES.projectors.command, ['run']);
});

const flows = [...common, 'AWS_REGION', 'ORDERPIPE_FLOWS__WORKERS', 'ORDERPIPE_COMMAND_API__URL', 'ORDERPIPE_AUTH__JWT_SECRET', 'ORDERPIPE_AUTH__ISSUER', 'ORDERPIPE_AUTH__AUDIENCE'];

test('flows services get exactly what crates/queues/flows/src/settings.rs needs for their workers', () => {
  // Settings::queue needs a queue's URL and its DLQ's together; worker_config needs the projector DLQ.
  assert.deepEqual(
    keysOf('flows-log').sort(),
    [
      ...flows,
      'ORDERPIPE_KINESIS__STREAM_NAME',
      'ORDERPIPE_DYNAMODB__LEASES_TABLE',
      'ORDERPIPE_DYNAMODB__PARKED_TABLE',
      'ORDERPIPE_SQS__PROJECTOR_DLQ_URL',
      'ORDERPIPE_SQS__PAYMENTS_QUEUE_URL',
      'ORDERPIPE_SQS__PAYMENTS_DLQ_URL',
      'ORDERPIPE_SQS__NOTIFICATIONS_QUEUE_URL',
      'ORDERPIPE_SQS__NOTIFICATIONS_DLQ_URL',
    ].sort(),
  );
  assert.deepEqual(
    keysOf('flows-payments').sort(),
    [...flows, 'ORDERPIPE_SQS__PAYMENTS_QUEUE_URL', 'ORDERPIPE_SQS__PAYMENTS_DLQ_URL'].sort(),
  );
  assert.deepEqual(keysOf('flows-intake').sort(), [...flows, 'ORDERPIPE_SQS__INTAKE_QUEUE_URL', 'ORDERPIPE_SQS__INTAKE_DLQ_URL'].sort());
  // Every worker of the binary runs in exactly one service, and only flows services name workers.
  const workers = SERVICE_NAMES.flatMap((n) => SERVICES[n].flowsWorkers ?? []).sort();
  assert.deepEqual(workers, ['intake', 'notifications', 'order_saga', 'payments']);
  for (const name of PROCESS_NAMES) {
    assert.equal(SERVICES[name].binary === 'flows', Boolean(SERVICES[name].flowsWorkers), name);
    if (SERVICES[name].binary === 'flows') assert.deepEqual(SERVICES[name].command, ['run'], name);
  }
});

test('dashboard gets exactly what crates/read/dashboard/src/settings.rs needs (board.* and history.schema default in code)', () => {
  assert.deepEqual(
    keysOf('dashboard').sort(),
    [
      ...common,
      'AWS_REGION',
      'ORDERPIPE_HTTP__HOST',
      'ORDERPIPE_HTTP__PORT',
      'ORDERPIPE_DYNAMODB__ACTIVE_ORDERS_TABLE',
      'ORDERPIPE_DYNAMODB__STORE_METRICS_TABLE',
      'ORDERPIPE_DYNAMODB__VIEWS_TABLE',
      ...database('ORDERPIPE_HISTORY__DATABASE__'),
      'ORDERPIPE_AUTH__JWT_SECRET',
      'ORDERPIPE_AUTH__ISSUER',
      'ORDERPIPE_AUTH__AUDIENCE',
      'ORDERPIPE_COMMAND_API__URL',
    ].sort(),
  );
  assert.deepEqual(SERVICES.dashboard.command, ['serve']);
});

test('replay gets exactly what replay/src/settings.rs reads (no admin endpoint, no log settings)', () => {
  assert.deepEqual(
    keysOf('replay').sort(),
    [
      'AWS_REGION',
      ...database('ORDERPIPE_DATABASE__'),
      ...database('ORDERPIPE_HISTORY__DATABASE__'),
      ...database('ORDERPIPE_ANALYTICS__DATABASE__'),
      'ORDERPIPE_DYNAMODB__ACTIVE_ORDERS_TABLE',
      'ORDERPIPE_DYNAMODB__STORE_METRICS_TABLE',
      'ORDERPIPE_DYNAMODB__VIEWS_TABLE',
      'ORDERPIPE_KINESIS__STREAM_NAME',
    ].sort(),
  );
});

test('the command API URL is the Service Connect name: the clients\' tonic channel has no TLS', () => {
  const key = CONFIG_KEYS.find((k) => k.key === 'ORDERPIPE_COMMAND_API__URL')!;
  assert.equal(key.plain!({ commandApiUrl: 'http://command-api:50051' } as never, SERVICES.dashboard), 'http://command-api:50051');
});
