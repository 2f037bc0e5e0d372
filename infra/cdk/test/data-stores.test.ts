import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import { Match } from 'aws-cdk-lib/assertions';
import { logicalId, referencedIds, synthStage } from './helpers';

const { template } = synthStage('dev');
const kmsKeyId = logicalId(template, 'AWS::KMS::Key', 'DataKey');

function table(name: string) {
  const tables = template.findResources('AWS::DynamoDB::Table', { Properties: { TableName: `orderpipe-dev-${name}` } });
  const values = Object.values(tables);
  assert.equal(values.length, 1, `table ${name}`);
  return values[0].Properties;
}

test('active-orders: pk/sk, by-status (gsi1pk/gsi1sk) and open-by-store (gsi2pk/gsi2sk) GSIs, TTL on expires_at', () => {
  const t = table('active-orders');
  assert.deepEqual(t.KeySchema, [
    { AttributeName: 'pk', KeyType: 'HASH' },
    { AttributeName: 'sk', KeyType: 'RANGE' },
  ]);
  assert.deepEqual(t.GlobalSecondaryIndexes, [
    {
      IndexName: 'by-status',
      KeySchema: [
        { AttributeName: 'gsi1pk', KeyType: 'HASH' },
        { AttributeName: 'gsi1sk', KeyType: 'RANGE' },
      ],
      Projection: { ProjectionType: 'ALL' },
    },
    {
      IndexName: 'open-by-store',
      KeySchema: [
        { AttributeName: 'gsi2pk', KeyType: 'HASH' },
        { AttributeName: 'gsi2sk', KeyType: 'RANGE' },
      ],
      Projection: { ProjectionType: 'ALL' },
    },
  ]);
  const attributes = Object.fromEntries(t.AttributeDefinitions.map((a: any) => [a.AttributeName, a.AttributeType]));
  assert.deepEqual(attributes, { pk: 'S', sk: 'S', gsi1pk: 'S', gsi1sk: 'S', gsi2pk: 'S', gsi2sk: 'S' });
  assert.deepEqual(t.TimeToLiveSpecification, { AttributeName: 'expires_at', Enabled: true });
});

test('store-metrics (pk/sk) and projector-leases (lease_key)', () => {
  assert.deepEqual(table('store-metrics').KeySchema, [
    { AttributeName: 'pk', KeyType: 'HASH' },
    { AttributeName: 'sk', KeyType: 'RANGE' },
  ]);
  assert.deepEqual(table('projector-leases').KeySchema, [{ AttributeName: 'lease_key', KeyType: 'HASH' }]);
});

test('projector-parked: parked_key (string) and position (number), no indexes', () => {
  const t = table('projector-parked');
  assert.deepEqual(t.KeySchema, [
    { AttributeName: 'parked_key', KeyType: 'HASH' },
    { AttributeName: 'position', KeyType: 'RANGE' },
  ]);
  assert.deepEqual(t.AttributeDefinitions, [
    { AttributeName: 'parked_key', AttributeType: 'S' },
    { AttributeName: 'position', AttributeType: 'N' },
  ]);
  assert.equal(t.GlobalSecondaryIndexes, undefined);
  assert.equal(t.DeletionProtectionEnabled, false);
});

test('views: hash key name (string), the alias of the live active-orders tables and replay progress', () => {
  const t = table('views');
  assert.deepEqual(t.KeySchema, [{ AttributeName: 'name', KeyType: 'HASH' }]);
  assert.deepEqual(t.AttributeDefinitions, [{ AttributeName: 'name', AttributeType: 'S' }]);
  assert.equal(t.GlobalSecondaryIndexes, undefined);
});

test('every table: on-demand, point-in-time recovery, encrypted with the data key', () => {
  const tables = Object.values(template.findResources('AWS::DynamoDB::Table'));
  assert.equal(tables.length, 5);
  for (const { Properties: t } of tables) {
    assert.equal(t.BillingMode, 'PAY_PER_REQUEST');
    assert.deepEqual(t.PointInTimeRecoverySpecification, { PointInTimeRecoveryEnabled: true });
    assert.equal(t.SSESpecification.SSEEnabled, true);
    assert.deepEqual(referencedIds(t.SSESpecification.KMSMasterKeyId), [kmsKeyId]);
  }
});

test('Aurora PostgreSQL Serverless v2, encrypted, IAM auth, isolated, logs exported', () => {
  template.hasResourceProperties('AWS::RDS::DBCluster', {
    Engine: 'aurora-postgresql',
    EngineVersion: Match.stringLikeRegexp('^16\\.'),
    DatabaseName: 'orderpipe',
    ServerlessV2ScalingConfiguration: { MinCapacity: 0.5, MaxCapacity: 4 },
    StorageEncrypted: true,
    KmsKeyId: { 'Fn::GetAtt': [kmsKeyId, 'Arn'] },
    EnableIAMDatabaseAuthentication: true,
    EnableCloudwatchLogsExports: ['postgresql'],
    Port: 5432,
  });
  template.resourceCountIs('AWS::RDS::DBInstance', 1);
  template.hasResourceProperties('AWS::RDS::DBInstance', { DBInstanceClass: 'db.serverless', PubliclyAccessible: false });
  const subnetGroup = Object.values(template.findResources('AWS::RDS::DBSubnetGroup'))[0];
  for (const subnet of subnetGroup.Properties.SubnetIds) assert.match(subnet.Ref, /dataSubnet/);
});

test('Aurora credentials are generated into Secrets Manager and passed to RDS by dynamic reference', () => {
  template.hasResourceProperties('AWS::SecretsManager::Secret', {
    Name: 'orderpipe-dev/aurora/admin',
    GenerateSecretString: Match.objectLike({ SecretStringTemplate: '{"username":"orderpipe_admin"}', GenerateStringKey: 'password' }),
  });
  const cluster = Object.values(template.findResources('AWS::RDS::DBCluster'))[0].Properties;
  assert.match(JSON.stringify(cluster.MasterUserPassword), /resolve:secretsmanager:/);
});

test('Aurora admits PostgreSQL only from the processes that use it', () => {
  const auroraGroup = logicalId(template, 'AWS::EC2::SecurityGroup', 'DataAuroraSecurityGroup');
  const ingress = Object.values(template.findResources('AWS::EC2::SecurityGroupIngress')).filter(
    (r) => r.Properties.GroupId['Fn::GetAtt']?.[0] === auroraGroup,
  );
  const sources = ingress.map((r) => r.Properties.SourceSecurityGroupId['Fn::GetAtt'][0].replace(/^Services|SecurityGroup.*$/g, '')).sort();
  // Event store: command API, relay, replay; history: projectors, replay, the dashboard (reads).
  assert.deepEqual(sources, ['CommandApi', 'Dashboard', 'Projectors', 'Relay', 'Replay']);
});

test('Redshift Serverless: private workgroup on 5439 in isolated subnets, KMS, audit logs, generated password', () => {
  template.hasResourceProperties('AWS::RedshiftServerless::Namespace', {
    NamespaceName: 'orderpipe-dev',
    DbName: 'analytics',
    AdminUsername: 'orderpipe_admin',
    KmsKeyId: { 'Fn::GetAtt': [kmsKeyId, 'Arn'] },
    LogExports: ['userlog', 'connectionlog', 'useractivitylog'],
    AdminUserPassword: Match.objectLike({ 'Fn::Join': Match.anyValue() }),
  });
  const workgroup = Object.values(template.findResources('AWS::RedshiftServerless::Workgroup'))[0].Properties;
  assert.equal(workgroup.PubliclyAccessible, false);
  assert.equal(workgroup.EnhancedVpcRouting, true);
  assert.equal(workgroup.Port, 5439);
  assert.equal(workgroup.BaseCapacity, 8);
  assert.equal(workgroup.SubnetIds.length, 3);
  const redshiftGroup = logicalId(template, 'AWS::EC2::SecurityGroup', 'DataRedshiftSecurityGroup');
  const ingress = Object.values(template.findResources('AWS::EC2::SecurityGroupIngress')).filter(
    (r) => r.Properties.GroupId['Fn::GetAtt']?.[0] === redshiftGroup,
  );
  const sources = ingress.map((r) => r.Properties.SourceSecurityGroupId['Fn::GetAtt'][0].replace(/^Services|SecurityGroup.*$/g, '')).sort();
  assert.deepEqual(sources, ['Projectors', 'Replay']);
  for (const r of ingress) assert.equal(r.Properties.FromPort, 5439);
});

test('dev data stores are disposable: tables and cluster are deleted with the stack', () => {
  for (const type of ['AWS::DynamoDB::Table', 'AWS::RDS::DBCluster', 'AWS::RedshiftServerless::Namespace']) {
    for (const r of Object.values(template.findResources(type))) assert.equal(r.DeletionPolicy, 'Delete', type);
  }
});
