import { Arn, ArnFormat, Duration, Stack, Tags } from 'aws-cdk-lib';
import * as dynamodb from 'aws-cdk-lib/aws-dynamodb';
import * as ec2 from 'aws-cdk-lib/aws-ec2';
import * as kms from 'aws-cdk-lib/aws-kms';
import * as logs from 'aws-cdk-lib/aws-logs';
import * as rds from 'aws-cdk-lib/aws-rds';
import * as redshiftserverless from 'aws-cdk-lib/aws-redshiftserverless';
import * as secretsmanager from 'aws-cdk-lib/aws-secretsmanager';
import { NagSuppressions } from 'cdk-nag';
import { Construct } from 'constructs';
import { DatabaseSource, PORTS } from './config';
import { attribute, constructId, RESOURCES } from './resources';
import { logRetention, retainOrDestroy, snapshotOrDestroy, StageConfig } from './stage';

/**
 * The tag every table of the live active-orders view carries (the deployed ones, and the
 * rebuilt ones replay swaps in, which get the live tables' tags): what the view's alarms select.
 */
export const ACTIVE_ORDERS_VIEW_TAG = { key: 'OrderpipeView', value: 'active-orders' } as const;

export interface DataStoresProps {
  readonly stage: StageConfig;
  readonly vpc: ec2.IVpc;
  readonly key: kms.IKey;
}

/** Name of the database in Aurora (event store and history schema) and in Redshift. */
export const AURORA_DATABASE = 'orderpipe';
export const AURORA_USER = 'orderpipe_admin';
export const REDSHIFT_DATABASE = 'analytics';
export const REDSHIFT_USER = 'orderpipe_admin';

const ROTATION_JUSTIFICATION =
  'The binaries receive this password once, at task start, through ECS secret injection and keep ' +
  'pooled connections; an automatic rotation would break every new connection until the tasks are ' +
  'replaced. Rotation is an operator runbook step (rotate, then force a new ECS deployment), see DEPLOYING.md.';

/**
 * DynamoDB read models, leases and parked commits, Aurora PostgreSQL Serverless v2 (event store, outbox, history)
 * and Redshift Serverless (analytics). Stateful resources are retained (or snapshotted) in stages
 * whose `removalPolicy` is `retain`.
 */
export class DataStores extends Construct {
  readonly activeOrders: dynamodb.Table;
  readonly storeMetrics: dynamodb.Table;
  readonly leases: dynamodb.Table;
  readonly parked: dynamodb.Table;
  /**
   * The views table (hash key `name`): the alias item naming the live active-orders tables, and
   * replay's progress items. Projectors and dashboard read the alias on every batch / read.
   */
  readonly views: dynamodb.Table;
  /** The customer-managed key the tables (and queues) are encrypted with. */
  readonly key: kms.IKey;
  readonly aurora: rds.DatabaseCluster;
  readonly auroraSecret: secretsmanager.ISecret;
  readonly redshiftSecret: secretsmanager.Secret;
  readonly redshiftWorkgroup: redshiftserverless.CfnWorkgroup;
  readonly redshiftSecurityGroup: ec2.SecurityGroup;

  private readonly prefix: string;
  private readonly tablesByName = new Map<string, dynamodb.Table>();

  constructor(scope: Construct, id: string, props: DataStoresProps) {
    super(scope, id);
    const { stage, vpc, key } = props;
    this.key = key;
    this.prefix = stage.prefix;
    const isolated: ec2.SubnetSelection = { subnetType: ec2.SubnetType.PRIVATE_ISOLATED };

    const tableDefaults = {
      billingMode: dynamodb.BillingMode.PAY_PER_REQUEST,
      encryption: dynamodb.TableEncryption.CUSTOMER_MANAGED,
      encryptionKey: key,
      pointInTimeRecoverySpecification: { pointInTimeRecoveryEnabled: true },
      deletionProtection: stage.deletionProtection,
      removalPolicy: retainOrDestroy(stage),
    };
    // Every table the code declares (resources.json), keyed as the code keys it.
    for (const declaration of RESOURCES.tables) {
      const table = new dynamodb.Table(this, constructId(declaration.name), {
        ...tableDefaults,
        tableName: `${stage.prefix}-${declaration.name}`,
        partitionKey: attribute(declaration.hash),
        sortKey: declaration.range ? attribute(declaration.range) : undefined,
        timeToLiveAttribute: declaration.time_to_live ?? undefined,
      });
      // By name, so the template does not change with the order the code lists them in.
      for (const index of [...declaration.indexes].sort((a, b) => a.name.localeCompare(b.name))) {
        table.addGlobalSecondaryIndex({
          indexName: index.name,
          partitionKey: { name: index.hash, type: dynamodb.AttributeType.STRING },
          sortKey: { name: index.range, type: dynamodb.AttributeType.STRING },
          projectionType: dynamodb.ProjectionType.ALL,
        });
      }
      this.tablesByName.set(declaration.name, table);
    }
    this.activeOrders = this.table('active-orders');
    this.storeMetrics = this.table('store-metrics');
    // The alarms find the view's tables by this tag, not by name: `replay rebuild --swap` moves
    // the view to rebuilt tables (other names) and copies the live tables' tags onto them.
    for (const table of [this.activeOrders, this.storeMetrics]) {
      Tags.of(table).add(ACTIVE_ORDERS_VIEW_TAG.key, ACTIVE_ORDERS_VIEW_TAG.value);
    }
    this.leases = this.table('projector-leases');
    // Commits a projection could not apply, and the later commits of their aggregates, waiting
    // for `projectors redrive` (one item per projection, aggregate and log position).
    this.parked = this.table('projector-parked');
    this.views = this.table('views');

    // Aurora PostgreSQL Serverless v2: the event store (source of truth) and the history schema.
    const clusterIdentifier = `${stage.prefix}-aurora`;
    const auroraLogs = new logs.LogGroup(this, 'AuroraPostgresLogs', {
      logGroupName: `/aws/rds/cluster/${clusterIdentifier}/postgresql`,
      retention: logRetention(stage),
      removalPolicy: retainOrDestroy(stage),
    });
    this.aurora = new rds.DatabaseCluster(this, 'Aurora', {
      clusterIdentifier,
      engine: rds.DatabaseClusterEngine.auroraPostgres({ version: rds.AuroraPostgresEngineVersion.VER_16_11 }),
      credentials: rds.Credentials.fromGeneratedSecret(AURORA_USER, { secretName: `${stage.prefix}/aurora/admin` }),
      defaultDatabaseName: AURORA_DATABASE,
      writer: rds.ClusterInstance.serverlessV2('writer', { publiclyAccessible: false, enablePerformanceInsights: true }),
      readers: Array.from({ length: stage.aurora.readers }, (_, i) =>
        rds.ClusterInstance.serverlessV2(`reader${i + 1}`, {
          scaleWithWriter: true,
          publiclyAccessible: false,
          enablePerformanceInsights: true,
        }),
      ),
      serverlessV2MinCapacity: stage.aurora.minCapacityAcu,
      serverlessV2MaxCapacity: stage.aurora.maxCapacityAcu,
      vpc,
      vpcSubnets: isolated,
      port: PORTS.postgres,
      storageEncrypted: true,
      storageEncryptionKey: key,
      iamAuthentication: true,
      enablePerformanceInsights: true,
      performanceInsightEncryptionKey: key,
      cloudwatchLogsExports: ['postgresql'],
      backup: { retention: Duration.days(stage.aurora.backupRetentionDays), preferredWindow: '03:00-04:00' },
      deletionProtection: stage.deletionProtection,
      removalPolicy: snapshotOrDestroy(stage),
      copyTagsToSnapshot: true,
    });
    // RDS creates the export log group itself (never expiring) unless it exists first.
    this.aurora.node.addDependency(auroraLogs);
    this.auroraSecret = this.aurora.secret!;

    // `aurora.secret` is the secret's target attachment; the rotation finding is on the secret itself.
    NagSuppressions.addResourceSuppressions(this.aurora.node.findChild('Secret'), [{ id: 'AwsSolutions-SMG4', reason: ROTATION_JUSTIFICATION }]);
    NagSuppressions.addResourceSuppressions(this.aurora, [
      {
        id: 'AwsSolutions-RDS11',
        reason:
          'The standard PostgreSQL port is kept: the cluster sits in isolated subnets and its security group ' +
          'admits only the three services that use it, so a non-standard port would add no protection.',
      },
      ...(stage.deletionProtection
        ? []
        : [
            {
              id: 'AwsSolutions-RDS10',
              reason: `Stage ${stage.name} is disposable (removalPolicy=destroy); prod enables deletion protection from its stage context.`,
            },
          ]),
    ]);

    // Redshift Serverless: the analytics fact tables, written by the projectors over the PostgreSQL protocol.
    this.redshiftSecret = new secretsmanager.Secret(this, 'RedshiftAdminSecret', {
      secretName: `${stage.prefix}/redshift/admin`,
      description: 'Redshift Serverless admin credentials used by the analytics projector',
      generateSecretString: {
        secretStringTemplate: JSON.stringify({ username: REDSHIFT_USER }),
        generateStringKey: 'password',
        passwordLength: 32,
        requireEachIncludedType: true,
        // Characters Redshift does not accept in passwords.
        excludeCharacters: `"'\\/@ `,
      },
      removalPolicy: retainOrDestroy(stage),
    });
    NagSuppressions.addResourceSuppressions(this.redshiftSecret, [{ id: 'AwsSolutions-SMG4', reason: ROTATION_JUSTIFICATION }]);

    this.redshiftSecurityGroup = new ec2.SecurityGroup(this, 'RedshiftSecurityGroup', {
      vpc,
      description: 'Redshift Serverless workgroup: ingress from the projectors only',
      allowAllOutbound: false,
    });

    const namespace = new redshiftserverless.CfnNamespace(this, 'RedshiftNamespace', {
      namespaceName: stage.prefix,
      dbName: REDSHIFT_DATABASE,
      adminUsername: REDSHIFT_USER,
      adminUserPassword: this.redshiftSecret.secretValueFromJson('password').unsafeUnwrap(),
      kmsKeyId: key.keyArn,
      logExports: ['userlog', 'connectionlog', 'useractivitylog'],
    });
    namespace.applyRemovalPolicy(retainOrDestroy(stage));

    this.redshiftWorkgroup = new redshiftserverless.CfnWorkgroup(this, 'RedshiftWorkgroup', {
      workgroupName: stage.prefix,
      namespaceName: namespace.namespaceName,
      baseCapacity: stage.redshift.baseCapacityRpu,
      maxCapacity: stage.redshift.maxCapacityRpu,
      enhancedVpcRouting: true,
      publiclyAccessible: false,
      port: PORTS.redshift,
      subnetIds: vpc.selectSubnets(isolated).subnetIds,
      securityGroupIds: [this.redshiftSecurityGroup.securityGroupId],
    });
    this.redshiftWorkgroup.addResourceDependency(namespace);
    this.redshiftWorkgroup.applyRemovalPolicy(retainOrDestroy(stage));
  }

  /** Every DynamoDB table, for dashboards. */
  tables(): dynamodb.Table[] {
    return [...this.tablesByName.values()];
  }

  /** The table the code declares as `name` (resources.json). */
  private table(name: string): dynamodb.Table {
    const table = this.tablesByName.get(name);
    if (!table) throw new Error(`resources.json declares no table named ${name} (regenerate it from the Rust code)`);
    return table;
  }

  /**
   * ARN pattern of every active-orders table: the deployed one and the tables `replay rebuild
   * active_orders` creates at runtime. Replay names them `<base>-orders` / `<base>-stores` with the
   * default base `<active orders table>-rebuild-<unix seconds>` (verify: `-verify-`), so after a
   * swap the live view lives in tables this stack never saw. Operators passing `--target` must keep
   * the `<prefix>-active-orders-` prefix (DEPLOYING.md).
   */
  activeOrdersTablesPattern(): string {
    return this.tableArn(`${this.prefix}-active-orders*`);
  }

  /** The indexes of the tables `activeOrdersTablesPattern` matches (the dashboard's queries). */
  activeOrdersIndexesPattern(): string {
    return this.tableArn(`${this.prefix}-active-orders*/index/*`);
  }

  /** Only the tables replay creates (rebuild, verify scratch), never the deployed one. */
  replayTablesPattern(): string {
    return this.tableArn(`${this.prefix}-active-orders-*`);
  }

  private tableArn(resourceName: string): string {
    return Arn.format(
      { service: 'dynamodb', resource: 'table', resourceName, arnFormat: ArnFormat.SLASH_RESOURCE_NAME },
      Stack.of(this),
    );
  }

  /** The event store: Aurora writer, database `orderpipe`. */
  eventStoreSource(): DatabaseSource {
    return {
      host: this.aurora.clusterEndpoint.hostname,
      port: PORTS.postgres,
      name: AURORA_DATABASE,
      username: AURORA_USER,
      secret: this.auroraSecret,
    };
  }

  /** The order history: same Aurora database, its own schema (the projector's migrations create it). */
  historySource(): DatabaseSource {
    return this.eventStoreSource();
  }

  /** Redshift Serverless workgroup endpoint. */
  analyticsSource(): DatabaseSource {
    return {
      host: this.redshiftWorkgroup.attrWorkgroupEndpointAddress,
      port: PORTS.redshift,
      name: REDSHIFT_DATABASE,
      username: REDSHIFT_USER,
      secret: this.redshiftSecret,
    };
  }
}
