import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import { Match } from 'aws-cdk-lib/assertions';
import { keysOf, ProcessName, SERVICE_NAMES, ServiceName, SERVICES } from '../lib/config';
import { actionsOfRole, logicalId, referencedIds, statementsOfRole, synthStage } from './helpers';

// With a trace collector, so that every optional key is set and each container's keys are exactly
// its capabilities' (test/traces.test.ts covers the stage without one).
const OTLP_ENDPOINT = 'http://otel-collector.orderpipe.internal:4317';
const { template, stage } = synthStage('dev', { context: { otlpEndpoint: OTLP_ENDPOINT } });
const resources = template.toJSON().Resources as Record<string, any>;

const pascal = (name: string) => name.split('-').map((p) => p[0].toUpperCase() + p.slice(1)).join('');
const taskRoleId = (name: ProcessName) => logicalId(template, 'AWS::IAM::Role', `Services${pascal(name)}TaskRole`);
const executionRoleId = (name: ProcessName) => logicalId(template, 'AWS::IAM::Role', `Services${pascal(name)}ExecutionRole`);
const taskDefinition = (name: ProcessName) => resources[logicalId(template, 'AWS::ECS::TaskDefinition', `Services${pascal(name)}Task`)].Properties;
const appContainer = (name: ProcessName) => taskDefinition(name).ContainerDefinitions.find((c: any) => c.Name === name);
const service = (name: ServiceName) => resources[logicalId(template, 'AWS::ECS::Service', `Services${pascal(name)}Service`)].Properties;

test('one Fargate service per binary, in private subnets without public IPs, with rollback on failure', () => {
  template.resourceCountIs('AWS::ECS::Service', SERVICE_NAMES.length);
  for (const name of SERVICE_NAMES) {
    const s = service(name);
    assert.equal(s.ServiceName, `orderpipe-dev-${name}`);
    assert.equal(s.LaunchType, 'FARGATE');
    assert.equal(s.NetworkConfiguration.AwsvpcConfiguration.AssignPublicIp, 'DISABLED');
    for (const subnet of s.NetworkConfiguration.AwsvpcConfiguration.Subnets) assert.match(subnet.Ref, /appSubnet/);
    assert.deepEqual(s.DeploymentConfiguration.DeploymentCircuitBreaker, { Enable: true, Rollback: true });
    assert.equal(s.DesiredCount, stage.services[name].desiredCount);
  }
});

test('each process runs its binary\'s image from ECR at the context image tag', () => {
  for (const name of [...SERVICE_NAMES, 'replay'] as const) {
    const image = JSON.stringify(appContainer(name).Image);
    assert.ok(image.includes(`/orderpipe/${SERVICES[name].binary}:${stage.images.tag}`), image);
  }
  assert.match(JSON.stringify(appContainer('flows-payments').Image), /\/orderpipe\/flows:/);
});

test('each container gets exactly the config keys its capabilities declare, secrets only from Secrets Manager', () => {
  for (const name of [...SERVICE_NAMES, 'replay'] as const) {
    const c = appContainer(name);
    const plain = (c.Environment ?? []).map((e: any) => e.Name);
    const secret = (c.Secrets ?? []).map((e: any) => e.Name);
    assert.deepEqual([...plain, ...secret].sort(), keysOf(name).sort(), name);
    for (const key of plain) assert.doesNotMatch(key, /PASSWORD|SECRET|TOKEN/, `${name} passes ${key} in plain text`);
    for (const s of c.Secrets ?? []) assert.match(JSON.stringify(s.ValueFrom), /Secret|secret/);
  }
});

test('the command API reads the event store, the token settings and its ports', () => {
  const env = Object.fromEntries(appContainer('command-api').Environment.map((e: any) => [e.Name, e.Value]));
  assert.equal(env.ORDERPIPE_GRPC__PORT, '50051');
  assert.equal(env.ORDERPIPE_ADMIN__PORT, '9090');
  assert.equal(env.ORDERPIPE_LOG__FORMAT, 'json');
  assert.equal(env.ORDERPIPE_DATABASE__PORT, '5432');
  assert.equal(env.ORDERPIPE_DATABASE__NAME, 'orderpipe');
  assert.equal(env.ORDERPIPE_AUTH__ISSUER, stage.auth.issuer);
  assert.equal(env.ORDERPIPE_AUTH__JWKS_URL, stage.auth.jwksUrl);
  assert.equal(env.ORDERPIPE_ADMIN__HOST, '127.0.0.1');
  // The command API has no AWS SDK client.
  assert.equal(env.AWS_REGION, undefined);
  const relayEnv = Object.fromEntries(appContainer('relay').Environment.map((e: any) => [e.Name, e.Value]));
  assert.equal(relayEnv.AWS_REGION, 'us-east-1');
  // Plain records until the deploy says every reader unpacks (relayCommitsPerRecord).
  assert.equal(relayEnv.ORDERPIPE_RELAY__MAX_COMMITS_PER_RECORD, '1');
  // The inventory marker after every batch until the deploy says every writer reads the stock items.
  const projectorsEnv = Object.fromEntries(appContainer('projectors').Environment.map((e: any) => [e.Name, e.Value]));
  assert.equal(projectorsEnv.ORDERPIPE_DYNAMODB__INVENTORY_MARKER, 'item');
  const secrets = Object.fromEntries(appContainer('command-api').Secrets.map((e: any) => [e.Name, JSON.stringify(e.ValueFrom)]));
  assert.match(secrets.ORDERPIPE_DATABASE__PASSWORD, /:password::/);
  assert.deepEqual(Object.keys(secrets).filter((k) => k.startsWith('ORDERPIPE_AUTH__')), [], 'the command API verifies with public keys only');
  const ports = appContainer('command-api').PortMappings.map((p: any) => p.ContainerPort).sort((a: number, b: number) => a - b);
  // The admin port listens on loopback and is not mapped; only the serving port is.
  assert.deepEqual(ports, [50051]);
  for (const name of ['relay', 'projectors'] as const) assert.deepEqual(appContainer(name).PortMappings ?? [], [], name);
});

test('no service holds a signing key: verifiers get the JWKS URL, the flows a minted service token', () => {
  const signingKey = /SECRET|SIGNING|PRIVATE/;
  for (const name of ['command-api', 'relay', 'projectors', 'flows-log', 'flows-payments', 'flows-intake', 'dashboard'] as const) {
    const container = appContainer(name);
    const keys = [...(container.Environment ?? []), ...(container.Secrets ?? [])].map((e: any) => e.Name as string);
    for (const key of keys) assert.doesNotMatch(key, signingKey, `${name} reads ${key}`);
  }
  for (const name of ['command-api', 'dashboard'] as const) {
    const env = Object.fromEntries(appContainer(name).Environment.map((e: any) => [e.Name, e.Value]));
    assert.equal(env.ORDERPIPE_AUTH__JWKS_URL, stage.auth.jwksUrl, name);
  }
  for (const name of ['flows-log', 'flows-payments', 'flows-intake'] as const) {
    const secrets = Object.fromEntries(appContainer(name).Secrets.map((e: any) => [e.Name, JSON.stringify(e.ValueFrom)]));
    assert.match(secrets.ORDERPIPE_AUTH__SERVICE_TOKEN, /ServicesFlowsServiceTokenSecret/, name);
    const env = Object.fromEntries(appContainer(name).Environment.map((e: any) => [e.Name, e.Value]));
    assert.equal(env.ORDERPIPE_AUTH__JWKS_URL, undefined, `${name} verifies no token`);
  }
  // The only auth secret in the app is the flows' token: no signing key or shared HMAC secret.
  const secretNames = Object.values(template.findResources('AWS::SecretsManager::Secret')).map((r: any) => String(r.Properties.Name));
  assert.deepEqual(secretNames.filter((n) => n.includes('/auth/')), ['orderpipe-dev/auth/flows-service-token']);
});

test('each binary runs its subcommand; the flows services choose their workers', () => {
  assert.deepEqual(appContainer('command-api').Command, ['serve']);
  assert.deepEqual(appContainer('relay').Command, ['run']);
  assert.deepEqual(appContainer('projectors').Command, ['run']);
  assert.deepEqual(appContainer('dashboard').Command, ['serve']);
  assert.deepEqual(appContainer('replay').Command, ['list']);
  const workers = (name: ProcessName) =>
    appContainer(name).Environment.find((e: any) => e.Name === 'ORDERPIPE_FLOWS__WORKERS').Value;
  assert.equal(workers('flows-log'), 'order_saga,notifications,purchase_orders');
  assert.equal(workers('flows-payments'), 'payments');
  assert.equal(workers('flows-intake'), 'intake');
  for (const name of ['flows-log', 'flows-payments', 'flows-intake'] as const) assert.deepEqual(appContainer(name).Command, ['run']);
});

test('every service without a load balancer is health-checked on /health of the loopback admin port', () => {
  for (const name of ['relay', 'projectors', 'flows-log', 'flows-payments', 'flows-intake'] as const) {
    const check = appContainer(name).HealthCheck;
    assert.deepEqual(check.Command, ['CMD', 'curl', '--fail', '--silent', '--max-time', '4', 'http://127.0.0.1:9090/health'], name);
    assert.equal(check.Interval, 30);
    assert.equal(check.Retries, 3);
    assert.ok(check.Timeout < check.Interval);
    const env = Object.fromEntries(appContainer(name).Environment.map((e: any) => [e.Name, e.Value]));
    assert.equal(env.ORDERPIPE_ADMIN__PORT, '9090');
    assert.equal(env.ORDERPIPE_ADMIN__HOST, '127.0.0.1');
  }
  // gRPC health on 50051 and the dashboard's /health on 8080 through the load balancer.
  assert.equal(appContainer('command-api').HealthCheck, undefined);
  assert.equal(appContainer('dashboard').HealthCheck, undefined);
});

test('the flows and the dashboard reach the command API through the load balancer over TLS; no hop is plaintext', () => {
  // No Service Connect: every caller, internal or not, goes through the HTTPS listener.
  assert.equal(Object.keys(template.findResources('AWS::ServiceDiscovery::HttpNamespace')).length, 0);
  const clients = ['flows-log', 'flows-payments', 'flows-intake', 'dashboard'] as const;
  for (const name of [...clients, 'command-api', 'relay', 'projectors'] as const) {
    assert.equal(service(name).ServiceConnectConfiguration, undefined, name);
  }
  for (const name of clients) {
    const env = Object.fromEntries(appContainer(name).Environment.map((e: any) => [e.Name, e.Value]));
    assert.equal(env.ORDERPIPE_COMMAND_API__URL, `https://${stage.dns.apiRecord}.${stage.dns.hostedZoneName}`, name);
  }
  // The load balancer -> task hop is TLS too: HTTPS targets, and the API serves TLS.
  template.hasResourceProperties('AWS::ElasticLoadBalancingV2::TargetGroup', {
    Port: 50051,
    Protocol: 'HTTPS',
    ProtocolVersion: 'GRPC',
  });
  const apiEnv = Object.fromEntries(appContainer('command-api').Environment.map((e: any) => [e.Name, e.Value]));
  assert.equal(apiEnv.ORDERPIPE_GRPC__TLS__SELF_SIGNED, 'true');
  // The API's port admits only the load balancer; the load balancer admits the clients on 443.
  const apiGroup = logicalId(template, 'AWS::EC2::SecurityGroup', 'ServicesCommandApiSecurityGroup');
  const lbGroup = logicalId(template, 'AWS::EC2::SecurityGroup', 'ServicesLoadBalancerSecurityGroup');
  const ingressTo = (group: string, port: number) =>
    Object.values(template.findResources('AWS::EC2::SecurityGroupIngress'))
      .filter((r) => r.Properties.GroupId['Fn::GetAtt']?.[0] === group && r.Properties.FromPort === port)
      .map((r) => r.Properties.SourceSecurityGroupId['Fn::GetAtt'][0])
      .sort();
  assert.deepEqual(ingressTo(apiGroup, 50051), [lbGroup]);
  assert.deepEqual(
    ingressTo(lbGroup, 443),
    clients.map((c) => logicalId(template, 'AWS::EC2::SecurityGroup', `Services${pascal(c)}SecurityGroup`)).sort(),
  );
});

test('internal load balancer: HTTPS listener forwarding to a gRPC target group with gRPC health checks', () => {
  template.hasResourceProperties('AWS::ElasticLoadBalancingV2::LoadBalancer', {
    Scheme: 'internal',
    LoadBalancerAttributes: Match.arrayWith([
      { Key: 'routing.http.drop_invalid_header_fields.enabled', Value: 'true' },
      { Key: 'access_logs.s3.enabled', Value: 'true' },
    ]),
  });
  template.hasResourceProperties('AWS::ElasticLoadBalancingV2::TargetGroup', {
    ProtocolVersion: 'GRPC',
    Port: 50051,
    TargetType: 'ip',
    HealthCheckPath: '/grpc.health.v1.Health/Check',
    Matcher: { GrpcCode: '0' },
  });
  template.hasResourceProperties('AWS::ElasticLoadBalancingV2::TargetGroup', {
    Port: 8080,
    HealthCheckPath: '/health',
  });
  const grpcTarget = logicalId(template, 'AWS::ElasticLoadBalancingV2::TargetGroup', 'ServicesCommandApiTargetGroup');
  template.hasResourceProperties('AWS::ElasticLoadBalancingV2::Listener', {
    Port: 443,
    Protocol: 'HTTPS',
    Certificates: [{ CertificateArn: { Ref: Match.stringLikeRegexp('LoadBalancerCertificate') } }],
    DefaultActions: [{ Type: 'forward', TargetGroupArn: { Ref: grpcTarget } }],
  });
  const api = service('command-api');
  assert.deepEqual(api.LoadBalancers, [{ ContainerName: 'command-api', ContainerPort: 50051, TargetGroupArn: { Ref: grpcTarget } }]);
  assert.equal(service('dashboard').LoadBalancers[0].ContainerPort, 8080);
});

test('the relay is a singleton: one task, old one stopped before the new one starts', () => {
  const relay = service('relay');
  assert.equal(relay.DesiredCount, 1);
  assert.equal(relay.DeploymentConfiguration.MinimumHealthyPercent, 0);
  assert.equal(relay.DeploymentConfiguration.MaximumPercent, 100);
});

test('command API, relay and the log consumers publish their alarm metrics through a non-essential collector sidecar', () => {
  for (const [name, metric] of [
    ['command-api', 'CommandErrors'],
    ['relay', 'OutboxBacklog'],
    ['projectors', 'ConsumerLagMillis'],
    ['flows-log', 'ConsumerLagMillis'],
  ] as const) {
    const sidecar = taskDefinition(name).ContainerDefinitions.find((c: any) => c.Name === 'metrics-collector');
    assert.equal(sidecar.Essential, false);
    const value = sidecar.Environment.find((e: any) => e.Name === 'AOT_CONFIG_CONTENT').Value;
    // The log group name is a token: join the literal parts around a placeholder.
    const text = typeof value === 'string' ? value : value['Fn::Join'][1].map((p: unknown) => (typeof p === 'string' ? p : 'TOKEN')).join('');
    const config = JSON.parse(text);
    assert.equal(config.exporters.awsemf.namespace, 'Orderpipe');
    assert.equal(config.processors.metricstransform.transforms[0].new_name, metric);
    assert.deepEqual(config.receivers.prometheus.config.scrape_configs[0].static_configs[0].targets, ['localhost:9090']);
  }
  for (const name of ['flows-payments', 'flows-intake', 'dashboard', 'replay'] as const) {
    assert.equal(taskDefinition(name).ContainerDefinitions.length, 1, name);
  }
});

const PROCESSES = [...SERVICE_NAMES, 'replay'] as const;

test('one task role and one execution role per process, assumable only by this account\'s ECS tasks', () => {
  const roleIds = PROCESSES.flatMap((n) => [taskRoleId(n), executionRoleId(n)]);
  assert.equal(new Set(roleIds).size, PROCESSES.length * 2);
  for (const name of PROCESSES) {
    const td = taskDefinition(name);
    assert.deepEqual(td.TaskRoleArn, { 'Fn::GetAtt': [taskRoleId(name), 'Arn'] });
    assert.deepEqual(td.ExecutionRoleArn, { 'Fn::GetAtt': [executionRoleId(name), 'Arn'] });
    const trust = resources[taskRoleId(name)].Properties.AssumeRolePolicyDocument.Statement[0];
    assert.equal(trust.Principal.Service, 'ecs-tasks.amazonaws.com');
    assert.equal(trust.Condition.StringEquals['aws:SourceAccount'], '123456789012');
  }
});

test('task roles: least privilege per service', () => {
  const actions = (name: ProcessName) => new Set(actionsOfRole(template, taskRoleId(name)));
  const hasAny = (name: ProcessName, prefix: string) => [...actions(name)].some((a) => a.startsWith(prefix));

  // The command API touches no AWS data service: Aurora is reached over the network.
  assert.deepEqual([...actions('command-api')].sort(), ['logs:CreateLogStream', 'logs:PutLogEvents']);
  // The relay only puts records on the stream (PutRecords, its one AWS call) and writes metrics.
  assert.deepEqual([...actions('relay')].sort(), ['kinesis:PutRecords', 'logs:CreateLogStream', 'logs:PutLogEvents']);
  // Projectors read the stream, write the views and leases, dead-letter bad records.
  const projectors = actions('projectors');
  for (const a of ['kinesis:GetRecords', 'kinesis:GetShardIterator', 'kinesis:ListShards', 'dynamodb:PutItem', 'dynamodb:UpdateItem', 'sqs:SendMessage']) {
    assert.ok(projectors.has(a), `projectors lack ${a}`);
  }
  assert.ok(!projectors.has('kinesis:PutRecord') && !projectors.has('sqs:ReceiveMessage') && !projectors.has('dynamodb:CreateTable'));
  // The dashboard only reads.
  const dashboard = actions('dashboard');
  assert.deepEqual(
    [...dashboard].sort(),
    ['dynamodb:DescribeTable', 'dynamodb:GetItem', 'dynamodb:Query', 'kms:Decrypt', 'kms:DescribeKey', 'kms:Encrypt', 'kms:GenerateDataKey*', 'kms:ReEncrypt*'],
  );
  // Queue consumers: their own queue and DLQ only; no stream, no table.
  for (const name of ['flows-payments', 'flows-intake'] as const) {
    assert.deepEqual(
      [...actions(name)].filter((a) => !a.startsWith('kms:')).sort(),
      ['sqs:ChangeMessageVisibility', 'sqs:DeleteMessage', 'sqs:GetQueueAttributes', 'sqs:ReceiveMessage', 'sqs:SendMessage'],
      name,
    );
  }
  // The log consumers read the stream and send to queues; they consume none.
  assert.ok(!actions('flows-log').has('sqs:ReceiveMessage') && actions('flows-log').has('kinesis:GetRecords'));
  assert.ok(!hasAny('flows-log', 'kinesis:Put') && !actions('flows-log').has('dynamodb:GetItem'));
  // Replay: no queue, no stream writes, no leases.
  assert.ok(!hasAny('replay', 'sqs:') && !hasAny('replay', 'kinesis:Put'));
});

const tableId = (name: string) =>
  Object.entries(template.findResources('AWS::DynamoDB::Table')).find(([, t]) => t.Properties.TableName === `orderpipe-dev-${name}`)![0];

/** The role's statements with their actions sorted and the resources rendered as text. */
const statementsOf = (name: ProcessName) =>
  statementsOfRole(template, taskRoleId(name)).map((s: any) => ({
    actions: (Array.isArray(s.Action) ? s.Action : [s.Action]).slice().sort() as string[],
    resources: referencedIds(s.Resource),
    text: JSON.stringify(s.Resource),
    condition: s.Condition,
  }));

/** The actions a role has on resources whose ARN text ends with `suffix` (patterns built by Fn::Join). */
const grantsOnPattern = (name: ProcessName, suffix: string) =>
  statementsOf(name)
    .filter((s) => s.text.includes(`:table/${suffix}"`))
    .flatMap((s) => s.actions)
    .sort();

test('the active-orders view is granted on the table pattern replay creates tables under, indexes only to the dashboard', () => {
  // After `replay rebuild active_orders --swap` the live tables are <base>-orders / <base>-stores.
  assert.deepEqual(grantsOnPattern('projectors', 'orderpipe-dev-active-orders*'), ['dynamodb:GetItem', 'dynamodb:UpdateItem']);
  assert.deepEqual(grantsOnPattern('dashboard', 'orderpipe-dev-active-orders*'), ['dynamodb:DescribeTable', 'dynamodb:GetItem', 'dynamodb:Query']);
  assert.deepEqual(grantsOnPattern('dashboard', 'orderpipe-dev-active-orders*/index/*'), ['dynamodb:Query']);
  assert.deepEqual(grantsOnPattern('projectors', 'orderpipe-dev-active-orders*/index/*'), []);
  // The alias is read on every batch / read.
  for (const name of ['projectors', 'dashboard'] as const) {
    const onViews = statementsOf(name).filter((s) => s.resources.includes(tableId('views'))).flatMap((s) => s.actions);
    assert.deepEqual(onViews, ['dynamodb:GetItem'], name);
  }
});

test('replay: creates and drops only its own tables, moves the alias, reads the stream and the stores', () => {
  assert.deepEqual(grantsOnPattern('replay', 'orderpipe-dev-active-orders-*'), ['dynamodb:CreateTable', 'dynamodb:DeleteTable']);
  assert.deepEqual(grantsOnPattern('replay', 'orderpipe-dev-active-orders*'), [
    'dynamodb:BatchWriteItem',
    'dynamodb:DeleteItem',
    'dynamodb:DescribeTable',
    'dynamodb:GetItem',
    'dynamodb:PutItem',
    'dynamodb:Scan',
    'dynamodb:UpdateItem',
  ]);
  const onViews = statementsOf('replay').filter((s) => s.resources.includes(tableId('views'))).flatMap((s) => s.actions).sort();
  assert.deepEqual(onViews, ['dynamodb:CreateTable', 'dynamodb:DeleteItem', 'dynamodb:DescribeTable', 'dynamodb:GetItem', 'dynamodb:PutItem', 'dynamodb:UpdateItem']);
  // The deployed tables can never be deleted by replay.
  for (const s of statementsOf('replay')) {
    if (s.actions.includes('dynamodb:DeleteTable')) assert.deepEqual(s.resources.filter((r) => r.startsWith('Data')), [], JSON.stringify(s));
  }
  const stream = logicalId(template, 'AWS::Kinesis::Stream', 'MessagingEventStream');
  const onStream = statementsOf('replay').filter((s) => s.resources.includes(stream)).flatMap((s) => s.actions).sort();
  assert.deepEqual(onStream, ['kinesis:DescribeStreamSummary', 'kinesis:GetRecords', 'kinesis:GetShardIterator', 'kinesis:ListShards']);
  // A one-off task: a task definition, no service, its own security group admitted by Aurora and Redshift.
  assert.ok(!Object.keys(template.findResources('AWS::ECS::Service')).some((id) => id.includes('Replay')));
  assert.equal(taskDefinition('replay').Family, 'orderpipe-dev-replay');
  const replayGroup = logicalId(template, 'AWS::EC2::SecurityGroup', 'ServicesReplaySecurityGroup');
  const admittedBy = Object.values(template.findResources('AWS::EC2::SecurityGroupIngress'))
    .filter((r) => r.Properties.SourceSecurityGroupId?.['Fn::GetAtt']?.[0] === replayGroup)
    .map((r) => r.Properties.GroupId['Fn::GetAtt'][0].replace(/SecurityGroup.*$/, ''))
    .sort();
  assert.deepEqual(admittedBy, ['DataAurora', 'DataRedshift']);
  template.hasOutput('ReplayTaskDefinitionFamily', {});
  template.hasOutput('ReplaySecurityGroupId', {});
});

test('projectors: exactly the calls of their code, each on its own resource; the data key only via DynamoDB and SQS', () => {
  const id = (type: string, prefix: string) => logicalId(template, type, prefix);
  const stream = id('AWS::Kinesis::Stream', 'MessagingEventStream');
  const dlq = id('AWS::SQS::Queue', 'MessagingProjectorDlq');
  const key = id('AWS::KMS::Key', 'DataKey');
  const statements = statementsOfRole(template, taskRoleId('projectors')).map((s: any) => ({
    actions: (Array.isArray(s.Action) ? s.Action : [s.Action]).slice().sort(),
    resources: referencedIds(s.Resource),
    condition: s.Condition,
  }));
  const grantsOn = (resource: string) =>
    statements.filter((s) => s.resources.includes(resource)).flatMap((s) => s.actions).sort();

  assert.deepEqual(grantsOn(stream), ['kinesis:GetRecords', 'kinesis:GetShardIterator', 'kinesis:ListShards']);
  assert.deepEqual(grantsOn(tableId('projector-leases')), ['dynamodb:PutItem', 'dynamodb:Scan', 'dynamodb:UpdateItem']);
  assert.deepEqual(grantsOn(tableId('projector-parked')), ['dynamodb:DeleteItem', 'dynamodb:PutItem', 'dynamodb:Query', 'dynamodb:Scan']);
  assert.deepEqual(grantsOn(tableId('store-metrics')), ['dynamodb:GetItem', 'dynamodb:UpdateItem']);
  assert.deepEqual(grantsOn(tableId('views')), ['dynamodb:GetItem']);
  assert.deepEqual(grantsOn(dlq), ['sqs:SendMessage']);

  const kms = statements.filter((s) => s.resources.includes(key));
  assert.equal(kms.length, 1);
  assert.deepEqual(kms[0].actions, ['kms:Decrypt', 'kms:DescribeKey', 'kms:Encrypt', 'kms:GenerateDataKey*', 'kms:ReEncrypt*']);
  assert.deepEqual(kms[0].condition, {
    StringEquals: { 'kms:ViaService': ['dynamodb.us-east-1.amazonaws.com', 'sqs.us-east-1.amazonaws.com'] },
  });

  // Nothing else: every statement is one of the above (or the active-orders pattern, tested
  // above), and no index or other table is reachable.
  const metricsLog = logicalId(template, 'AWS::Logs::LogGroup', 'ServicesMetricsLogGroup');
  const covered = [stream, tableId('projector-leases'), tableId('projector-parked'), tableId('store-metrics'), tableId('views'), dlq, key, metricsLog];
  for (const s of statements) assert.ok(s.resources.every((r) => covered.includes(r)), JSON.stringify(s));
  const json = JSON.stringify(statementsOfRole(template, taskRoleId('projectors')));
  assert.doesNotMatch(json, /index\//);
});

test('queue grants point at the right queues', () => {
  const queueId = (name: string) =>
    Object.entries(template.findResources('AWS::SQS::Queue')).find(([, q]) => q.Properties.QueueName === name)![0];
  const resourcesFor = (name: ProcessName, action: string) =>
    statementsOfRole(template, taskRoleId(name))
      .filter((s) => (Array.isArray(s.Action) ? s.Action : [s.Action]).includes(action))
      .flatMap((s) => referencedIds(s.Resource))
      .sort();
  const ids = (...names: string[]) => names.map(queueId).sort();
  assert.deepEqual(resourcesFor('flows-intake', 'sqs:ReceiveMessage'), ids('orderpipe-dev-intake'));
  assert.deepEqual(resourcesFor('flows-intake', 'sqs:SendMessage'), ids('orderpipe-dev-intake-dlq'));
  assert.deepEqual(resourcesFor('flows-intake', 'sqs:GetQueueAttributes'), ids('orderpipe-dev-intake-dlq'));
  assert.deepEqual(resourcesFor('flows-payments', 'sqs:ReceiveMessage'), ids('orderpipe-dev-payments.fifo'));
  assert.deepEqual(resourcesFor('flows-payments', 'sqs:ChangeMessageVisibility'), ids('orderpipe-dev-payments.fifo'));
  assert.deepEqual(resourcesFor('flows-payments', 'sqs:DeleteMessage'), ids('orderpipe-dev-payments.fifo'));
  assert.deepEqual(resourcesFor('flows-payments', 'sqs:SendMessage'), ids('orderpipe-dev-payments-dlq.fifo'));
  assert.deepEqual(
    resourcesFor('flows-log', 'sqs:SendMessage'),
    ids(
      'orderpipe-dev-notifications',
      'orderpipe-dev-payments.fifo',
      'orderpipe-dev-projector-dlq',
      'orderpipe-dev-purchase-orders.fifo',
    ),
  );
  assert.deepEqual(
    resourcesFor('flows-log', 'sqs:GetQueueAttributes'),
    ids('orderpipe-dev-notifications-dlq', 'orderpipe-dev-payments-dlq.fifo', 'orderpipe-dev-purchase-orders-dlq.fifo'),
  );
  assert.deepEqual(resourcesFor('projectors', 'sqs:SendMessage'), ids('orderpipe-dev-projector-dlq'));
});

test('flows-log shares the projectors\' lease and parked tables (its consumer groups have their own keys)', () => {
  for (const name of ['leases', 'parked'] as const) {
    const table = tableId(`projector-${name}`);
    const on = (p: ProcessName) => statementsOf(p).filter((s) => s.resources.includes(table)).flatMap((s) => s.actions).sort();
    assert.deepEqual(on('flows-log'), on('projectors'), name);
  }
});

test('no task role is granted a wildcard action or resource', () => {
  for (const name of PROCESSES) {
    for (const s of statementsOfRole(template, taskRoleId(name))) {
      assert.equal(s.Effect, 'Allow');
      for (const a of Array.isArray(s.Action) ? s.Action : [s.Action]) assert.notEqual(a, '*');
      assert.notEqual(s.Resource, '*', `${name}: ${JSON.stringify(s.Action)} on *`);
      if (Array.isArray(s.Resource)) assert.ok(!s.Resource.includes('*'));
    }
  }
});

test('execution roles: only ecr:GetAuthorizationToken on *, secrets limited to what the process reads', () => {
  for (const name of PROCESSES) {
    const statements = statementsOfRole(template, executionRoleId(name));
    for (const s of statements) {
      if (s.Resource === '*') assert.equal(s.Action, 'ecr:GetAuthorizationToken');
    }
    const secretReads = statements.filter((s) => JSON.stringify(s.Action).includes('secretsmanager:GetSecretValue'));
    const expectsSecrets = (appContainer(name).Secrets ?? []).length > 0;
    assert.equal(secretReads.length > 0, expectsSecrets, name);
  }
});
