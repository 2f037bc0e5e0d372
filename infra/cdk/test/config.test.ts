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

test('the flows call the command API with a minted service token; token checkers get the JWKS, never a key', () => {
  for (const name of PROCESS_NAMES) {
    const keys = keysOf(name);
    if (SERVICES[name].binary === 'flows' && SERVICES[name].capabilities.includes('commandApiClient')) {
      assert.ok(keys.includes('ORDERPIPE_AUTH__SERVICE_TOKEN'), name);
    }
    if (SERVICES[name].capabilities.includes('jwt')) assert.ok(keys.includes('ORDERPIPE_AUTH__JWKS_URL'), name);
    assert.ok(!keys.some((key) => /SECRET|SIGNING|PRIVATE/.test(key)), `${name}: ${keys}`);
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

test('the projectors keep the inventory marker until the deploy says every writer reads the stock items (inventoryMarker)', () => {
  assert.equal(loadStageConfig(node({ stage: 'prod' }), 'us-east-1').inventoryMarker, 'item');
  assert.equal(loadStageConfig(node({ stage: 'dev', inventoryMarker: 'sku_items' }), 'us-east-1').inventoryMarker, 'sku_items');
  assert.throws(
    () => loadStageConfig(node({ stage: 'dev', inventoryMarker: 'skus' }), 'us-east-1'),
    /inventoryMarker must be item or sku_items, not "skus"/,
  );
});

test('the relay packs only when the deploy says every reader unpacks (relayCommitsPerRecord)', () => {
  assert.equal(loadStageConfig(node({ stage: 'prod' }), 'us-east-1').relayCommitsPerRecord, 1);
  assert.equal(loadStageConfig(node({ stage: 'dev', relayCommitsPerRecord: '100' }), 'us-east-1').relayCommitsPerRecord, 100);
  assert.throws(
    () => loadStageConfig(node({ stage: 'dev', relayCommitsPerRecord: '0' }), 'us-east-1'),
    /relayCommitsPerRecord must be a whole number at least 1/,
  );
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

/**
 * The keys each binary reads, as `<binary> settings-keys` prints them: generated from the Rust
 * settings types and their defaults into settings-keys.json, which a Rust test
 * (crates/testing/pipeline-tests/tests/settings_keys.rs) keeps equal to the binaries' output.
 */
const READ: Record<string, { env: string; required: boolean }[]> = JSON.parse(
  fs.readFileSync(path.join(__dirname, '..', 'settings-keys.json'), 'utf8'),
);

test('every process sets only keys its binary reads, and every key its binary requires', () => {
  for (const name of PROCESS_NAMES) {
    const read = READ[SERVICES[name].binary];
    assert.ok(read, `settings-keys.json has no ${SERVICES[name].binary}`);
    const given = keysOf(name);
    for (const key of given.filter((k) => k.startsWith('ORDERPIPE_'))) {
      assert.ok(read.some((r) => r.env === key), `${name} sets ${key}, which ${SERVICES[name].binary} does not read`);
    }
    for (const { env } of read.filter((r) => r.required)) {
      assert.ok(given.includes(env), `${name} lacks ${env}, which ${SERVICES[name].binary} requires`);
    }
  }
});

test('AWS_REGION goes exactly to the processes whose binary reads AWS settings (command-api has no AWS SDK)', () => {
  for (const name of PROCESS_NAMES) {
    const usesAws = READ[SERVICES[name].binary].some((r) => r.env === 'ORDERPIPE_AWS__REGION');
    assert.equal(keysOf(name).includes('AWS_REGION'), usesAws, name);
  }
  assert.ok(!keysOf('command-api').includes('AWS_REGION'));
});

test('each service runs its binary\'s long-running subcommand', () => {
  assert.deepEqual(SERVICES['command-api'].command, ['serve']);
  assert.deepEqual(SERVICES.relay.command, ['run']);
  assert.deepEqual(SERVICES.projectors.command, ['run']);
  assert.deepEqual(SERVICES.dashboard.command, ['serve']);
});

test('flows services run exactly the workers of the binary, each worker in one service', () => {
  const workers = SERVICE_NAMES.flatMap((n) => SERVICES[n].flowsWorkers ?? []).sort();
  assert.deepEqual(workers, ['intake', 'notifications', 'order_saga', 'payments', 'purchase_orders']);
  for (const name of PROCESS_NAMES) {
    assert.equal(SERVICES[name].binary === 'flows', Boolean(SERVICES[name].flowsWorkers), name);
    if (SERVICES[name].binary === 'flows') {
      assert.deepEqual(SERVICES[name].command, ['run'], name);
      assert.ok(keysOf(name).includes('ORDERPIPE_FLOWS__WORKERS'), name);
    }
  }
});

test('the command API URL is the Service Connect name: the clients\' tonic channel has no TLS', () => {
  const key = CONFIG_KEYS.find((k) => k.key === 'ORDERPIPE_COMMAND_API__URL')!;
  assert.equal(key.plain!({ commandApiUrl: 'http://command-api:50051' } as never, SERVICES.dashboard), 'http://command-api:50051');
});
