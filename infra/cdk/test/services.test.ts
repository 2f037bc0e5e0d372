import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import { Match } from 'aws-cdk-lib/assertions';
import { keysOf, SERVICE_NAMES, ServiceName } from '../lib/config';
import { actionsOfRole, logicalId, referencedIds, statementsOfRole, synthStage } from './helpers';

const { template, stage } = synthStage('dev');
const resources = template.toJSON().Resources as Record<string, any>;

const pascal = (name: string) => name.split('-').map((p) => p[0].toUpperCase() + p.slice(1)).join('');
const taskRoleId = (name: ServiceName) => logicalId(template, 'AWS::IAM::Role', `Services${pascal(name)}TaskRole`);
const executionRoleId = (name: ServiceName) => logicalId(template, 'AWS::IAM::Role', `Services${pascal(name)}ExecutionRole`);
const taskDefinition = (name: ServiceName) => resources[logicalId(template, 'AWS::ECS::TaskDefinition', `Services${pascal(name)}Task`)].Properties;
const appContainer = (name: ServiceName) => taskDefinition(name).ContainerDefinitions.find((c: any) => c.Name === name);
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

test('each service runs its own image from ECR at the context image tag', () => {
  for (const name of SERVICE_NAMES) {
    const image = JSON.stringify(appContainer(name).Image);
    assert.ok(image.includes(`/orderpipe/${name}:${stage.images.tag}`), image);
  }
});

test('each container gets exactly the config keys its capabilities declare, secrets only from Secrets Manager', () => {
  for (const name of SERVICE_NAMES) {
    const c = appContainer(name);
    const plain = (c.Environment ?? []).map((e: any) => e.Name);
    const secret = (c.Secrets ?? []).map((e: any) => e.Name);
    assert.deepEqual([...plain, ...secret].sort(), keysOf(name).sort(), name);
    for (const key of plain) assert.doesNotMatch(key, /PASSWORD|SECRET/, `${name} passes ${key} in plain text`);
    for (const s of c.Secrets ?? []) assert.match(JSON.stringify(s.ValueFrom), /Secret|secret/);
  }
});

test('the command API reads the event store, the JWT settings and its ports', () => {
  const env = Object.fromEntries(appContainer('command-api').Environment.map((e: any) => [e.Name, e.Value]));
  assert.equal(env.ORDERPIPE_GRPC__PORT, '50051');
  assert.equal(env.ORDERPIPE_ADMIN__PORT, '9090');
  assert.equal(env.ORDERPIPE_LOG__FORMAT, 'json');
  assert.equal(env.ORDERPIPE_DATABASE__PORT, '5432');
  assert.equal(env.ORDERPIPE_DATABASE__NAME, 'orderpipe');
  assert.equal(env.ORDERPIPE_AUTH__ISSUER, stage.auth.issuer);
  assert.equal(env.ORDERPIPE_ADMIN__HOST, '127.0.0.1');
  // The command API has no AWS SDK client.
  assert.equal(env.AWS_REGION, undefined);
  assert.equal(Object.fromEntries(appContainer('relay').Environment.map((e: any) => [e.Name, e.Value])).AWS_REGION, 'us-east-1');
  const secrets = Object.fromEntries(appContainer('command-api').Secrets.map((e: any) => [e.Name, JSON.stringify(e.ValueFrom)]));
  assert.match(secrets.ORDERPIPE_DATABASE__PASSWORD, /:password::/);
  assert.match(secrets.ORDERPIPE_AUTH__JWT_SECRET, /ServicesJwtSecret/);
  const ports = appContainer('command-api').PortMappings.map((p: any) => p.ContainerPort).sort((a: number, b: number) => a - b);
  // The admin port listens on loopback and is not mapped; only the serving port is.
  assert.deepEqual(ports, [50051]);
  for (const name of ['relay', 'projectors'] as const) assert.deepEqual(appContainer(name).PortMappings ?? [], [], name);
});

test('each built binary runs its subcommand; planned ones keep the image default', () => {
  assert.deepEqual(appContainer('command-api').Command, ['serve']);
  assert.deepEqual(appContainer('relay').Command, ['run']);
  assert.deepEqual(appContainer('projectors').Command, ['run']);
  for (const name of ['saga-worker', 'payment-worker', 'intake-worker', 'notification-worker', 'dashboard'] as const) {
    assert.equal(appContainer(name).Command, undefined, name);
  }
});

test('relay and projectors are health-checked on /health of the loopback admin port; the command API by the load balancer', () => {
  for (const name of ['relay', 'projectors'] as const) {
    const check = appContainer(name).HealthCheck;
    assert.deepEqual(check.Command, ['CMD', 'curl', '--fail', '--silent', '--max-time', '4', 'http://127.0.0.1:9090/health'], name);
    assert.equal(check.Interval, 30);
    assert.equal(check.Retries, 3);
    assert.ok(check.Timeout < check.Interval);
    const env = Object.fromEntries(appContainer(name).Environment.map((e: any) => [e.Name, e.Value]));
    assert.equal(env.ORDERPIPE_ADMIN__PORT, '9090');
    assert.equal(env.ORDERPIPE_ADMIN__HOST, '127.0.0.1');
  }
  // gRPC health on 50051 through the load balancer (see the load balancer test), no container check.
  assert.equal(appContainer('command-api').HealthCheck, undefined);
});

test('workers reach the command API through the internal load balancer over TLS', () => {
  for (const name of ['saga-worker', 'payment-worker', 'intake-worker'] as const) {
    const env = Object.fromEntries(appContainer(name).Environment.map((e: any) => [e.Name, e.Value]));
    assert.equal(env.ORDERPIPE_COMMAND_API__URL, 'https://api.dev.orderpipe.example.com');
  }
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

test('command API and relay publish their alarm metrics through a non-essential collector sidecar', () => {
  for (const [name, metric] of [['command-api', 'CommandErrors'], ['relay', 'OutboxBacklog']] as const) {
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
  assert.equal(taskDefinition('projectors').ContainerDefinitions.length, 1);
});

test('one task role and one execution role per service, assumable only by this account\'s ECS tasks', () => {
  const roleIds = SERVICE_NAMES.flatMap((n) => [taskRoleId(n), executionRoleId(n)]);
  assert.equal(new Set(roleIds).size, SERVICE_NAMES.length * 2);
  for (const name of SERVICE_NAMES) {
    const td = taskDefinition(name);
    assert.deepEqual(td.TaskRoleArn, { 'Fn::GetAtt': [taskRoleId(name), 'Arn'] });
    assert.deepEqual(td.ExecutionRoleArn, { 'Fn::GetAtt': [executionRoleId(name), 'Arn'] });
    const trust = resources[taskRoleId(name)].Properties.AssumeRolePolicyDocument.Statement[0];
    assert.equal(trust.Principal.Service, 'ecs-tasks.amazonaws.com');
    assert.equal(trust.Condition.StringEquals['aws:SourceAccount'], '123456789012');
  }
});

test('task roles: least privilege per service', () => {
  const actions = (name: ServiceName) => new Set(actionsOfRole(template, taskRoleId(name)));
  const hasAny = (name: ServiceName, prefix: string) => [...actions(name)].some((a) => a.startsWith(prefix));

  // The command API touches no AWS data service: Aurora is reached over the network.
  assert.deepEqual([...actions('command-api')].sort(), ['logs:CreateLogStream', 'logs:PutLogEvents']);
  // The relay only puts records on the stream (PutRecords, its one AWS call) and writes metrics.
  assert.deepEqual([...actions('relay')].sort(), ['kinesis:PutRecords', 'logs:CreateLogStream', 'logs:PutLogEvents']);
  // Projectors read the stream, write the views and leases, dead-letter bad records.
  const projectors = actions('projectors');
  for (const a of ['kinesis:GetRecords', 'kinesis:GetShardIterator', 'kinesis:ListShards', 'dynamodb:PutItem', 'dynamodb:UpdateItem', 'sqs:SendMessage']) {
    assert.ok(projectors.has(a), `projectors lack ${a}`);
  }
  assert.ok(!projectors.has('kinesis:PutRecord') && !projectors.has('sqs:ReceiveMessage'));
  // The dashboard only reads.
  const dashboard = actions('dashboard');
  assert.ok(dashboard.has('dynamodb:Query') && dashboard.has('dynamodb:GetItem'));
  for (const a of ['dynamodb:PutItem', 'dynamodb:UpdateItem', 'dynamodb:DeleteItem', 'dynamodb:BatchWriteItem']) assert.ok(!dashboard.has(a));
  // Queue workers consume their own queue only.
  assert.ok(actions('payment-worker').has('sqs:ReceiveMessage'));
  assert.ok(!hasAny('payment-worker', 'kinesis:') && !hasAny('payment-worker', 'dynamodb:'));
  assert.ok(!hasAny('notification-worker', 'kinesis:') && !hasAny('notification-worker', 'dynamodb:'));
  assert.ok(!actions('saga-worker').has('sqs:ReceiveMessage'));
});

test('projectors: exactly the calls of their code, each on its own resource; the data key only via DynamoDB and SQS', () => {
  const id = (type: string, prefix: string) => logicalId(template, type, prefix);
  const stream = id('AWS::Kinesis::Stream', 'MessagingEventStream');
  const dlq = id('AWS::SQS::Queue', 'MessagingProjectorDlq');
  const key = id('AWS::KMS::Key', 'DataKey');
  const tableId = (name: string) =>
    Object.entries(template.findResources('AWS::DynamoDB::Table')).find(([, t]) => t.Properties.TableName === `orderpipe-dev-${name}`)![0];
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
  assert.deepEqual(grantsOn(tableId('active-orders')), ['dynamodb:GetItem', 'dynamodb:UpdateItem']);
  assert.deepEqual(grantsOn(tableId('store-metrics')), ['dynamodb:GetItem', 'dynamodb:UpdateItem']);
  assert.deepEqual(grantsOn(dlq), ['sqs:SendMessage']);

  const kms = statements.filter((s) => s.resources.includes(key));
  assert.equal(kms.length, 1);
  assert.deepEqual(kms[0].actions, ['kms:Decrypt', 'kms:DescribeKey', 'kms:Encrypt', 'kms:GenerateDataKey*', 'kms:ReEncrypt*']);
  assert.deepEqual(kms[0].condition, {
    StringEquals: { 'kms:ViaService': ['dynamodb.us-east-1.amazonaws.com', 'sqs.us-east-1.amazonaws.com'] },
  });

  // Nothing else: every statement is one of the above, and no index or other table is reachable.
  const covered = [stream, tableId('projector-leases'), tableId('projector-parked'), tableId('active-orders'), tableId('store-metrics'), dlq, key];
  for (const s of statements) assert.ok(s.resources.length > 0 && s.resources.every((r) => covered.includes(r)), JSON.stringify(s));
  const json = JSON.stringify(statementsOfRole(template, taskRoleId('projectors')));
  assert.doesNotMatch(json, /index\//);
});

test('queue grants point at the right queues', () => {
  const queueId = (name: string) =>
    Object.entries(template.findResources('AWS::SQS::Queue')).find(([, q]) => q.Properties.QueueName === name)![0];
  const resourcesFor = (name: ServiceName, action: string) =>
    statementsOfRole(template, taskRoleId(name))
      .filter((s) => (Array.isArray(s.Action) ? s.Action : [s.Action]).includes(action))
      .flatMap((s) => referencedIds(s.Resource))
      .sort();
  assert.deepEqual(resourcesFor('intake-worker', 'sqs:ReceiveMessage'), [queueId('orderpipe-dev-intake')]);
  assert.deepEqual(resourcesFor('intake-worker', 'sqs:SendMessage'), [queueId('orderpipe-dev-intake-dlq')]);
  assert.deepEqual(resourcesFor('payment-worker', 'sqs:ReceiveMessage'), [queueId('orderpipe-dev-payments.fifo')]);
  assert.deepEqual(
    resourcesFor('saga-worker', 'sqs:SendMessage'),
    [queueId('orderpipe-dev-notifications'), queueId('orderpipe-dev-payments.fifo')].sort(),
  );
  assert.deepEqual(resourcesFor('notification-worker', 'sqs:ReceiveMessage'), [queueId('orderpipe-dev-notifications')]);
});

test('no task role is granted a wildcard action or resource', () => {
  for (const name of SERVICE_NAMES) {
    for (const s of statementsOfRole(template, taskRoleId(name))) {
      assert.equal(s.Effect, 'Allow');
      for (const a of Array.isArray(s.Action) ? s.Action : [s.Action]) assert.notEqual(a, '*');
      assert.notEqual(s.Resource, '*', `${name}: ${JSON.stringify(s.Action)} on *`);
      if (Array.isArray(s.Resource)) assert.ok(!s.Resource.includes('*'));
    }
  }
});

test('execution roles: only ecr:GetAuthorizationToken on *, secrets limited to what the service reads', () => {
  for (const name of SERVICE_NAMES) {
    const statements = statementsOfRole(template, executionRoleId(name));
    for (const s of statements) {
      if (s.Resource === '*') assert.equal(s.Action, 'ecr:GetAuthorizationToken');
    }
    const secretReads = statements.filter((s) => JSON.stringify(s.Action).includes('secretsmanager:GetSecretValue'));
    const expectsSecrets = (appContainer(name).Secrets ?? []).length > 0;
    assert.equal(secretReads.length > 0, expectsSecrets, name);
  }
});
