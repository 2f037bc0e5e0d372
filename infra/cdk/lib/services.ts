import { Duration, RemovalPolicy, Stack } from 'aws-cdk-lib';
import * as acm from 'aws-cdk-lib/aws-certificatemanager';
import * as ec2 from 'aws-cdk-lib/aws-ec2';
import * as ecr from 'aws-cdk-lib/aws-ecr';
import * as ecs from 'aws-cdk-lib/aws-ecs';
import * as elbv2 from 'aws-cdk-lib/aws-elasticloadbalancingv2';
import * as iam from 'aws-cdk-lib/aws-iam';
import * as logs from 'aws-cdk-lib/aws-logs';
import * as route53 from 'aws-cdk-lib/aws-route53';
import * as route53Targets from 'aws-cdk-lib/aws-route53-targets';
import * as s3 from 'aws-cdk-lib/aws-s3';
import * as secretsmanager from 'aws-cdk-lib/aws-secretsmanager';
import { NagSuppressions } from 'cdk-nag';
import { Construct } from 'constructs';
import {
  Capability,
  ConfigSources,
  METRICS_NAMESPACE,
  PORTS,
  ProcessName,
  PublishedMetric,
  SERVICE_NAMES,
  ServiceName,
  SERVICES,
  serviceEnvironment,
} from './config';
import { DataStores } from './data-stores';
import { Messaging, QueuePair } from './messaging';
import { logRetention, retainOrDestroy, StageConfig } from './stage';

export interface ServicesProps {
  readonly stage: StageConfig;
  readonly vpc: ec2.IVpc;
  readonly data: DataStores;
  readonly messaging: Messaging;
}

/** One process's task definition, with its own task and execution roles and security group. */
export interface PipelineTask {
  readonly name: ProcessName;
  readonly taskDefinition: ecs.FargateTaskDefinition;
  readonly taskRole: iam.Role;
  readonly executionRole: iam.Role;
  readonly logGroup: logs.LogGroup;
  readonly securityGroup: ec2.SecurityGroup;
}

/** A long-running process: its task definition run as a Fargate service. */
export interface PipelineService extends PipelineTask {
  readonly name: ServiceName;
  readonly service: ecs.FargateService;
}

const GRPC_HEALTH_CHECK_PATH = '/grpc.health.v1.Health/Check';

/**
 * The ECS cluster, the internal load balancer (gRPC command API and dashboard), one Fargate
 * service per long-running process and the `replay` task definition. Each process's configuration
 * comes from `serviceEnvironment` and its IAM grants from `grantCapability`, both driven by the
 * capabilities in `config.ts`.
 */
export class Services extends Construct {
  readonly cluster: ecs.Cluster;
  readonly loadBalancer: elbv2.ApplicationLoadBalancer;
  /** The load balancer's security group: the command API's clients are admitted on 443 here. */
  readonly loadBalancerSecurityGroup: ec2.SecurityGroup;
  readonly grpcTargetGroup: elbv2.ApplicationTargetGroup;
  readonly dashboardTargetGroup: elbv2.ApplicationTargetGroup;
  /** The flows' service token (a value the issuer minted; see DEPLOYING.md "Tokens"). */
  readonly flowsServiceToken: secretsmanager.Secret;
  readonly metricsLogGroup: logs.LogGroup;
  readonly services: Record<ServiceName, PipelineService>;
  /** `replay`: a task definition operators start with `aws ecs run-task` (DEPLOYING.md). */
  readonly replay: PipelineTask;
  readonly apiDomainName: string;
  readonly dashboardDomainName: string;

  private readonly props: ServicesProps;

  constructor(scope: Construct, id: string, props: ServicesProps) {
    super(scope, id);
    this.props = props;
    const { stage, vpc, data, messaging } = props;
    const appSubnets: ec2.SubnetSelection = { subnetType: ec2.SubnetType.PRIVATE_WITH_EGRESS };

    this.cluster = new ecs.Cluster(this, 'Cluster', {
      clusterName: stage.prefix,
      vpc,
      containerInsightsV2: ecs.ContainerInsights.ENHANCED,
    });

    // No service holds a signing key: the command API and the dashboard verify tokens against the
    // issuer's JWKS (stage `auth.jwksUrl`), and the flows call with a token the issuer minted,
    // which an operator puts in this secret (its generated value is a placeholder no JWKS accepts).
    this.flowsServiceToken = new secretsmanager.Secret(this, 'FlowsServiceTokenSecret', {
      secretName: `${stage.prefix}/auth/flows-service-token`,
      description: "The flows' bearer token for the command API (role service), minted by the token issuer",
      generateSecretString: { passwordLength: 32, excludePunctuation: true },
      removalPolicy: retainOrDestroy(stage),
    });
    NagSuppressions.addResourceSuppressions(this.flowsServiceToken, [
      {
        id: 'AwsSolutions-SMG4',
        reason:
          'The value is a token minted by the external issuer, which Secrets Manager cannot mint; it is renewed ' +
          'before its expiry by re-minting it and forcing a new deployment of the flows (DEPLOYING.md "Tokens").',
      },
    ]);

    this.metricsLogGroup = new logs.LogGroup(this, 'MetricsLogGroup', {
      logGroupName: `/${stage.prefix}/metrics`,
      retention: logs.RetentionDays.ONE_WEEK,
      removalPolicy: retainOrDestroy(stage),
    });

    // Internal load balancer: gRPC needs an HTTPS listener, so a DNS-validated certificate is made
    // for the API and dashboard names in the stage's hosted zone.
    const zone = route53.HostedZone.fromHostedZoneAttributes(this, 'Zone', {
      hostedZoneId: stage.dns.hostedZoneId,
      zoneName: stage.dns.hostedZoneName,
    });
    this.apiDomainName = `${stage.dns.apiRecord}.${stage.dns.hostedZoneName}`;
    this.dashboardDomainName = `${stage.dns.dashboardRecord}.${stage.dns.hostedZoneName}`;
    const certificate = new acm.Certificate(this, 'LoadBalancerCertificate', {
      domainName: this.apiDomainName,
      subjectAlternativeNames: [this.dashboardDomainName],
      validation: acm.CertificateValidation.fromDns(zone),
    });

    const lbSecurityGroup = (this.loadBalancerSecurityGroup = new ec2.SecurityGroup(this, 'LoadBalancerSecurityGroup', {
      vpc,
      description: 'Internal load balancer: HTTPS from the VPC and the configured internal networks',
      allowAllOutbound: false,
    }));
    lbSecurityGroup.addIngressRule(ec2.Peer.ipv4(stage.vpcCidr), ec2.Port.tcp(443), 'gRPC/HTTPS from inside the VPC');
    for (const cidr of stage.internalClientCidrs) {
      lbSecurityGroup.addIngressRule(ec2.Peer.ipv4(cidr), ec2.Port.tcp(443), `gRPC/HTTPS from ${cidr}`);
    }

    const accessLogs = new s3.Bucket(this, 'LoadBalancerAccessLogs', {
      encryption: s3.BucketEncryption.S3_MANAGED,
      blockPublicAccess: s3.BlockPublicAccess.BLOCK_ALL,
      objectOwnership: s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
      enforceSSL: true,
      versioned: false,
      lifecycleRules: [{ expiration: Duration.days(stage.logRetentionDays) }],
      // Access logs are audit records: kept when the stack goes, in every stage.
      removalPolicy: RemovalPolicy.RETAIN,
    });
    NagSuppressions.addResourceSuppressions(accessLogs, [
      {
        id: 'AwsSolutions-S1',
        reason:
          'This bucket only receives load balancer access logs; logging access to it into yet another bucket ' +
          'would add a log of logs with no audit value. Reads are limited by bucket policy and SSL is enforced.',
      },
    ]);

    this.loadBalancer = new elbv2.ApplicationLoadBalancer(this, 'InternalLoadBalancer', {
      loadBalancerName: `${stage.prefix}-internal`,
      vpc,
      vpcSubnets: appSubnets,
      internetFacing: false,
      securityGroup: lbSecurityGroup,
      dropInvalidHeaderFields: true,
      deletionProtection: stage.deletionProtection,
      http2Enabled: true,
    });
    this.loadBalancer.logAccessLogs(accessLogs, 'internal-lb');

    // HTTPS to the targets: the bearer tokens stay encrypted on the load balancer -> task hop too.
    // The load balancer does not check a target's certificate; the API makes its own at start
    // (ORDERPIPE_GRPC__TLS__SELF_SIGNED).
    this.grpcTargetGroup = new elbv2.ApplicationTargetGroup(this, 'CommandApiTargetGroup', {
      vpc,
      targetType: elbv2.TargetType.IP,
      protocol: elbv2.ApplicationProtocol.HTTPS,
      protocolVersion: elbv2.ApplicationProtocolVersion.GRPC,
      port: PORTS.grpc,
      deregistrationDelay: Duration.seconds(30),
      healthCheck: {
        path: GRPC_HEALTH_CHECK_PATH,
        healthyGrpcCodes: '0',
        interval: Duration.seconds(15),
        timeout: Duration.seconds(5),
        healthyThresholdCount: 2,
        unhealthyThresholdCount: 3,
      },
    });
    this.dashboardTargetGroup = new elbv2.ApplicationTargetGroup(this, 'DashboardTargetGroup', {
      vpc,
      targetType: elbv2.TargetType.IP,
      protocol: elbv2.ApplicationProtocol.HTTP,
      port: PORTS.dashboardHttp,
      deregistrationDelay: Duration.seconds(30),
      healthCheck: { path: '/health', healthyHttpCodes: '200', interval: Duration.seconds(15) },
    });

    const listener = this.loadBalancer.addListener('Https', {
      port: 443,
      protocol: elbv2.ApplicationProtocol.HTTPS,
      certificates: [certificate],
      sslPolicy: elbv2.SslPolicy.RECOMMENDED_TLS,
      open: false,
      defaultAction: elbv2.ListenerAction.forward([this.grpcTargetGroup]),
    });
    listener.addAction('Dashboard', {
      priority: 10,
      conditions: [elbv2.ListenerCondition.hostHeaders([this.dashboardDomainName])],
      action: elbv2.ListenerAction.forward([this.dashboardTargetGroup]),
    });

    for (const [recordId, recordName] of [
      ['ApiRecord', this.apiDomainName],
      ['DashboardRecord', this.dashboardDomainName],
    ]) {
      new route53.ARecord(this, recordId, {
        zone,
        recordName,
        target: route53.RecordTarget.fromAlias(new route53Targets.LoadBalancerTarget(this.loadBalancer)),
      });
    }

    const sources: ConfigSources = {
      region: Stack.of(this).region,
      eventStore: data.eventStoreSource(),
      history: data.historySource(),
      analytics: data.analyticsSource(),
      jwksUrl: stage.auth.jwksUrl,
      flowsServiceToken: this.flowsServiceToken,
      jwtIssuer: stage.auth.issuer,
      jwtAudience: stage.auth.audience,
      streamName: messaging.stream.streamName,
      relayCommitsPerRecord: stage.relayCommitsPerRecord,
      inventoryMarker: stage.inventoryMarker,
      activeOrdersTable: data.activeOrders.tableName,
      storeMetricsTable: data.storeMetrics.tableName,
      leasesTable: data.leases.tableName,
      parkedTable: data.parked.tableName,
      viewsTable: data.views.tableName,
      intake: { url: messaging.intake.queue.queueUrl, dlqUrl: messaging.intake.dlq.queueUrl },
      payments: { url: messaging.payments.queue.queueUrl, dlqUrl: messaging.payments.dlq.queueUrl },
      notifications: { url: messaging.notifications.queue.queueUrl, dlqUrl: messaging.notifications.dlq.queueUrl },
      purchaseOrders: { url: messaging.purchaseOrders.queue.queueUrl, dlqUrl: messaging.purchaseOrders.dlq.queueUrl },
      projectorDlqUrl: messaging.projectorDlq.queueUrl,
      // The internal clients call the API through the load balancer, as every caller does: TLS
      // end to end with its ACM certificate (trusted through the image's system roots), and
      // per-call balancing over the API's tasks.
      commandApiUrl: `https://${this.apiDomainName}`,
      otlpEndpoint: stage.otlpEndpoint,
    };

    // The command API first: its clients are added knowing it is there (they reach it through the
    // load balancer, whose security group their grants open).
    const services = {} as Record<ServiceName, PipelineService>;
    for (const name of SERVICE_NAMES) {
      services[name] = this.addService(name, sources, services['command-api']);
    }
    this.services = services;
    this.replay = this.addTask('replay', sources, stage.replay, services['command-api']);

    // Register the serving port explicitly (the container name and port the target group forwards to).
    const api = services['command-api'].service;
    this.grpcTargetGroup.addTarget(api.loadBalancerTarget({ containerName: 'command-api', containerPort: PORTS.grpc }));
    const dashboard = services.dashboard.service;
    this.dashboardTargetGroup.addTarget(
      dashboard.loadBalancerTarget({ containerName: 'dashboard', containerPort: PORTS.dashboardHttp }),
    );

    const apiSizing = stage.services['command-api'];
    if (apiSizing.maxCount && apiSizing.maxCount > apiSizing.desiredCount) {
      const scaling = api.autoScaleTaskCount({ minCapacity: apiSizing.desiredCount, maxCapacity: apiSizing.maxCount });
      scaling.scaleOnCpuUtilization('Cpu', {
        targetUtilizationPercent: 60,
        scaleOutCooldown: Duration.seconds(60),
        scaleInCooldown: Duration.minutes(5),
      });
    }
  }

  private addService(name: ServiceName, sources: ConfigSources, commandApi: PipelineService | undefined): PipelineService {
    const { stage } = this.props;
    const spec = SERVICES[name];
    const sizing = stage.services[name];
    const task = this.addTask(name, sources, sizing, commandApi);

    const service = new ecs.FargateService(this, `${constructId(name)}Service`, {
      serviceName: `${stage.prefix}-${name}`,
      cluster: this.cluster,
      taskDefinition: task.taskDefinition,
      desiredCount: spec.singleton ? Math.min(1, sizing.desiredCount) : sizing.desiredCount,
      // A singleton is stopped before its replacement starts; the others roll with full capacity.
      minHealthyPercent: spec.singleton ? 0 : 100,
      maxHealthyPercent: spec.singleton ? 100 : 200,
      circuitBreaker: { enable: true, rollback: true },
      vpcSubnets: { subnetType: ec2.SubnetType.PRIVATE_WITH_EGRESS },
      securityGroups: [task.securityGroup],
      assignPublicIp: false,
      platformVersion: ecs.FargatePlatformVersion.LATEST,
      propagateTags: ecs.PropagatedTagSource.SERVICE,
      enableExecuteCommand: false,
      ...(spec.ingress ? { healthCheckGracePeriod: Duration.seconds(60) } : {}),
    });
    return { ...task, name, service };
  }

  /** The task definition, roles, log group and security group of one process, with its grants. */
  private addTask(
    name: ProcessName,
    sources: ConfigSources,
    sizing: { readonly cpu: number; readonly memoryMiB: number },
    commandApi: PipelineService | undefined,
  ): PipelineTask {
    const { stage } = this.props;
    const spec = SERVICES[name];
    const id = constructId(name);
    const stack = Stack.of(this);

    const taskRole = new iam.Role(this, `${id}TaskRole`, {
      roleName: `${stage.prefix}-${name}-task`,
      description: `Task role of ${name}: ${spec.description}`.slice(0, 1000),
      assumedBy: ecsTasksPrincipal(stack),
    });
    const executionRole = new iam.Role(this, `${id}ExecutionRole`, {
      roleName: `${stage.prefix}-${name}-execution`,
      description: `ECS agent role of ${name}: pulls its image, writes its logs, reads its secrets`,
      assumedBy: ecsTasksPrincipal(stack),
    });

    const taskDefinition = new ecs.FargateTaskDefinition(this, `${id}Task`, {
      family: `${stage.prefix}-${name}`,
      cpu: sizing.cpu,
      memoryLimitMiB: sizing.memoryMiB,
      taskRole,
      executionRole,
      runtimePlatform: {
        operatingSystemFamily: ecs.OperatingSystemFamily.LINUX,
        cpuArchitecture: ecs.CpuArchitecture.X86_64,
      },
    });

    const logGroup = new logs.LogGroup(this, `${id}Logs`, {
      logGroupName: `/${stage.prefix}/${name}`,
      retention: logRetention(stage),
      removalPolicy: retainOrDestroy(stage),
    });

    const repository = ecr.Repository.fromRepositoryName(this, `${id}Repository`, `${stage.images.ecrRepositoryPrefix}/${spec.binary}`);
    const { environment, secrets } = serviceEnvironment(name, sources);
    // The admin port is not mapped: it listens on loopback (ORDERPIPE_ADMIN__HOST) for the task's
    // own collector sidecar and health check; only the serving port of an ingress service is mapped.
    const portMappings: ecs.PortMapping[] = [];
    if (spec.ingress === 'grpc') portMappings.push({ containerPort: PORTS.grpc, name: 'grpc' });
    if (spec.ingress === 'http') portMappings.push({ containerPort: PORTS.dashboardHttp, name: 'http', appProtocol: ecs.AppProtocol.http });

    taskDefinition.addContainer('app', {
      containerName: name,
      image: ecs.ContainerImage.fromEcrRepository(repository, stage.images.tag),
      // The image's entrypoint is the binary; this is its subcommand (`serve`, `run`, `list`).
      command: [...spec.command],
      ...(spec.adminHealthCheck ? { healthCheck: adminHealthCheck() } : {}),
      essential: true,
      environment,
      secrets,
      portMappings,
      readonlyRootFilesystem: true,
      stopTimeout: Duration.seconds(30),
      logging: ecs.LogDrivers.awsLogs({
        logGroup,
        streamPrefix: name,
        mode: ecs.AwsLogDriverMode.NON_BLOCKING,
      }),
    });

    if (spec.publishedMetrics?.length) {
      this.addMetricsCollector(taskDefinition, name, spec.publishedMetrics, logGroup);
      this.metricsLogGroup.grantWrite(taskRole);
    }

    const securityGroup = new ec2.SecurityGroup(this, `${id}SecurityGroup`, {
      vpc: this.props.vpc,
      description: `Tasks of ${name}`,
      allowAllOutbound: true,
    });

    const kmsVia = new Set<KmsVia>();
    for (const capability of spec.capabilities) {
      const via = this.grantCapability(capability, { name, role: taskRole, securityGroup, commandApi });
      if (via) kmsVia.add(via);
    }
    this.grantDataKeyVia(taskRole, kmsVia);

    NagSuppressions.addResourceSuppressions(
      taskDefinition,
      [
        {
          id: 'AwsSolutions-ECS2',
          reason:
            'Only non-secret configuration (endpoints, names, ports, URLs) is passed as environment variables, ' +
            'which is how the binaries read config; passwords and keys come from Secrets Manager via `secrets`.',
        },
      ],
    );
    NagSuppressions.addResourceSuppressions(
      executionRole,
      [
        {
          id: 'AwsSolutions-IAM5',
          reason:
            'ecr:GetAuthorizationToken has no resource-level permissions and must be granted on `*`; the image pull ' +
            'itself is limited to this service\'s repository.',
          appliesTo: ['Resource::*'],
        },
      ],
      true,
    );
    suppressGrantWildcards(taskRole, stage.prefix);

    return { name, taskDefinition, taskRole, executionRole, logGroup, securityGroup };
  }

  /**
   * Sidecar that scrapes the binary's Prometheus `/metrics` on localhost and publishes the selected
   * series to CloudWatch (namespace `Orderpipe`, dimensions Stage and Service) as embedded metric
   * format logs: this is where the `OutboxBacklog` and `CommandErrors` alarm metrics come from.
   */
  private addMetricsCollector(
    taskDefinition: ecs.FargateTaskDefinition,
    service: ProcessName,
    metrics: readonly PublishedMetric[],
    logGroup: logs.LogGroup,
  ) {
    const { stage } = this.props;
    taskDefinition.addContainer('metrics-collector', {
      containerName: 'metrics-collector',
      image: ecs.ContainerImage.fromRegistry(stage.images.adotCollector),
      // Losing metrics must not take the service down.
      essential: false,
      memoryReservationMiB: 64,
      environment: {
        AOT_CONFIG_CONTENT: collectorConfig({
          service,
          stage: stage.name,
          region: Stack.of(this).region,
          logGroupName: this.metricsLogGroup.logGroupName,
          metrics,
        }),
      },
      logging: ecs.LogDrivers.awsLogs({ logGroup, streamPrefix: 'metrics-collector', mode: ecs.AwsLogDriverMode.NON_BLOCKING }),
    });
  }

  /**
   * The IAM grants and network access of one capability: the only place a task role gets
   * permissions. The actions are exactly the AWS calls the binaries' code makes (named in the
   * comments); KMS use of the data key is granted once per role by `grantDataKeyVia`.
   */
  private grantCapability(capability: Capability, to: GrantTarget): KmsVia | undefined {
    const { data, messaging } = this.props;
    const { role, securityGroup, name } = to;
    const stream = messaging.stream.streamArn;
    const liveViewTables = [data.storeMetrics.tableArn, data.activeOrdersTablesPattern()];
    switch (capability) {
      case 'eventStore':
      case 'historyStore':
      case 'historyRead':
        data.aurora.connections.allowDefaultPortFrom(securityGroup, `PostgreSQL from ${name}`);
        return undefined;
      case 'analyticsStore':
        data.redshiftSecurityGroup.addIngressRule(securityGroup, ec2.Port.tcp(PORTS.redshift), `Redshift from ${name}`);
        return undefined;
      case 'commandApiClient':
        if (!to.commandApi) throw new Error(`${name} calls the command API, which must be added before it`);
        // Through the load balancer (TLS), like every other caller: the API's own port admits
        // only the load balancer.
        this.loadBalancerSecurityGroup.addIngressRule(securityGroup, ec2.Port.tcp(443), `gRPC over TLS from ${name}`);
        return undefined;
      case 'adminEndpoint':
      case 'structuredLogs':
      case 'jwt':
      case 'serviceToken':
      case 'grpcServer':
      case 'httpServer':
      case 'flowsWorkers':
      case 'analyticsLoad':
        // Secrets are read by the execution role at task start; listeners need no IAM.
        return undefined;
      case 'streamWrite':
        // relay: record_log.rs PutRecords (batches of up to 500). The stream uses the AWS managed
        // Kinesis key, so no KMS grant is needed.
        allow(role, ['kinesis:PutRecords'], [stream]);
        return undefined;
      case 'streamRead':
        // kinesis-consumer kinesis.rs (also under flows' saga and notifications): ListShards
        // (by stream name), GetShardIterator, GetRecords.
        allow(role, ['kinesis:ListShards', 'kinesis:GetShardIterator', 'kinesis:GetRecords'], [stream]);
        return undefined;
      case 'streamReplay':
        // replay from_stream.rs: DescribeStreamSummary (retention, for --since), then the runtime's
        // ListShards / GetShardIterator (TRIM_HORIZON, AT_TIMESTAMP) / GetRecords.
        allow(
          role,
          ['kinesis:DescribeStreamSummary', 'kinesis:ListShards', 'kinesis:GetShardIterator', 'kinesis:GetRecords'],
          [stream],
        );
        return undefined;
      case 'activeOrdersWrite':
        // projectors active_orders: orders.rs and stock.rs GetItem, update.rs conditional
        // UpdateItem; on whichever tables the alias names (no index reads).
        allow(role, ['dynamodb:GetItem', 'dynamodb:UpdateItem'], liveViewTables);
        return 'dynamodb';
      case 'activeOrdersRead':
        // dashboard views.rs: Query the stores table and the orders table's open-by-store index,
        // GetItem a store's day; app.rs health check DescribeTable on the orders table.
        allow(role, ['dynamodb:GetItem', 'dynamodb:Query'], liveViewTables);
        allow(role, ['dynamodb:Query'], [data.activeOrdersIndexesPattern()]);
        allow(role, ['dynamodb:DescribeTable'], [data.activeOrdersTablesPattern()]);
        return 'dynamodb';
      case 'viewsRead':
        // ViewAlias::live: a consistent GetItem of the alias item, once per batch / read.
        allow(role, ['dynamodb:GetItem'], [data.views.tableArn]);
        return 'dynamodb';
      case 'viewsRebuild':
        // replay: ViewAlias::create_table runs on every start and gets ResourceInUse for the
        // deployed views table, so it needs CreateTable/DescribeTable there; progress.rs and the
        // alias moves GetItem/PutItem/UpdateItem/DeleteItem. Rebuild targets and verify scratch
        // tables (`<prefix>-active-orders-*`) are created, described and dropped; the live tables
        // (deployed or swapped in) are read, emptied (--in-place) and written through the projection.
        allow(
          role,
          ['dynamodb:CreateTable', 'dynamodb:DescribeTable', 'dynamodb:GetItem', 'dynamodb:PutItem', 'dynamodb:UpdateItem', 'dynamodb:DeleteItem'],
          [data.views.tableArn],
        );
        allow(role, ['dynamodb:CreateTable', 'dynamodb:DeleteTable'], [data.replayTablesPattern()]);
        allow(
          role,
          [
            'dynamodb:DescribeTable',
            'dynamodb:Scan',
            'dynamodb:BatchWriteItem',
            'dynamodb:GetItem',
            'dynamodb:PutItem',
            'dynamodb:UpdateItem',
            'dynamodb:DeleteItem',
          ],
          liveViewTables,
        );
        return 'dynamodb';
      case 'leases':
        // kinesis-consumer leases.rs: PutItem (new lease), UpdateItem (take, renew, checkpoint,
        // release), Scan (the worker's lease list, and `projectors leases`).
        allow(role, ['dynamodb:PutItem', 'dynamodb:UpdateItem', 'dynamodb:Scan'], [data.leases.tableArn]);
        return 'dynamodb';
      case 'parked':
        // kinesis-consumer parked.rs: PutItem (park), Query (has_parked, list), DeleteItem and
        // Scan (`projectors redrive`, which runs as a one-off task of this task definition).
        allow(role, ['dynamodb:PutItem', 'dynamodb:Query', 'dynamodb:DeleteItem', 'dynamodb:Scan'], [data.parked.tableArn]);
        return 'dynamodb';
      case 'intakeConsume':
        consume(role, messaging.intake);
        return 'sqs';
      case 'paymentsConsume':
        consume(role, messaging.payments);
        return 'sqs';
      case 'paymentsSend':
        // flows saga: payments/mod.rs SendMessage (charge and refund requests).
        allow(role, ['sqs:SendMessage'], [messaging.payments.queue.queueArn]);
        watchDepth(role, messaging.payments);
        return 'sqs';
      case 'notificationsSend':
        // flows notifications.rs: SendMessage.
        allow(role, ['sqs:SendMessage'], [messaging.notifications.queue.queueArn]);
        watchDepth(role, messaging.notifications);
        return 'sqs';
      case 'purchaseOrdersSend':
        // flows purchase_orders.rs: SendMessage (FIFO, group = store, dedup id = purchase order id).
        allow(role, ['sqs:SendMessage'], [messaging.purchaseOrders.queue.queueArn]);
        watchDepth(role, messaging.purchaseOrders);
        return 'sqs';
      case 'projectorDeadLetter':
        // kinesis-consumer dead_letters.rs: SendMessage to the queue URL it is given.
        allow(role, ['sqs:SendMessage'], [messaging.projectorDlq.queueArn]);
        return 'sqs';
    }
  }

  /**
   * Use of the data key, only through the services that encrypt with it on the role's behalf
   * (`kms:ViaService`): DynamoDB tables and SQS queues encrypted with the customer-managed key.
   */
  private grantDataKeyVia(role: iam.IRole, via: ReadonlySet<KmsVia>) {
    if (via.size === 0) return;
    const region = Stack.of(this).region;
    role.addToPrincipalPolicy(
      new iam.PolicyStatement({
        actions: ['kms:Decrypt', 'kms:DescribeKey', 'kms:Encrypt', 'kms:GenerateDataKey*', 'kms:ReEncrypt*'],
        resources: [this.props.data.key.keyArn],
        conditions: { StringEquals: { 'kms:ViaService': [...via].sort().map((v) => `${v}.${region}.amazonaws.com`) } },
      }),
    );
  }
}

/** AWS services that use the data key on a task role's behalf. */
type KmsVia = 'dynamodb' | 'sqs';

/** Who a capability is granted to. */
interface GrantTarget {
  readonly name: ProcessName;
  readonly role: iam.IRole;
  readonly securityGroup: ec2.SecurityGroup;
  /** The command API's service, for its clients' network access. */
  readonly commandApi: PipelineService | undefined;
}

function allow(role: iam.IRole, actions: string[], resources: string[]) {
  role.addToPrincipalPolicy(new iam.PolicyStatement({ actions, resources }));
}

/**
 * flows queue.rs: ReceiveMessage, ChangeMessageVisibility (heartbeat, retry backoff),
 * DeleteMessage; SendMessage of a dead letter (with its reason) to the DLQ.
 */
function consume(role: iam.IRole, pair: QueuePair) {
  allow(role, ['sqs:ReceiveMessage', 'sqs:ChangeMessageVisibility', 'sqs:DeleteMessage'], [pair.queue.queueArn]);
  allow(role, ['sqs:SendMessage'], [pair.dlq.queueArn]);
  watchDepth(role, pair);
}

/** flows app.rs: GetQueueAttributes on every configured DLQ, for `orderpipe_flows_dlq_depth`. */
function watchDepth(role: iam.IRole, pair: QueuePair) {
  allow(role, ['sqs:GetQueueAttributes'], [pair.dlq.queueArn]);
}

/** `flows-log` -> `FlowsLog`: the construct id prefix of a process. */
function constructId(name: ProcessName): string {
  return name
    .split('-')
    .map((part) => part[0].toUpperCase() + part.slice(1))
    .join('');
}

/**
 * ECS container health check on the admin endpoint's `/health` (loopback, inside the container):
 * 200 while the process can do its work, 503 with the reason otherwise. The image must ship `curl`.
 */
function adminHealthCheck(): ecs.HealthCheck {
  return {
    command: ['CMD', 'curl', '--fail', '--silent', '--max-time', '4', `http://127.0.0.1:${PORTS.admin}/health`],
    interval: Duration.seconds(30),
    timeout: Duration.seconds(5),
    retries: 3,
    startPeriod: Duration.seconds(60),
  };
}

/** ECS tasks of this account and region only (confused-deputy protection). */
function ecsTasksPrincipal(stack: Stack): iam.IPrincipal {
  return new iam.ServicePrincipal('ecs-tasks.amazonaws.com').withConditions({
    StringEquals: { 'aws:SourceAccount': stack.account },
    ArnLike: { 'aws:SourceArn': `arn:${stack.partition}:ecs:${stack.region}:${stack.account}:*` },
  });
}

/**
 * The wildcards in task role policies: the active-orders table pattern (tables replay creates at
 * runtime), the indexes of those tables, and the action families of CDK's grant methods.
 */
function suppressGrantWildcards(role: iam.Role, prefix: string) {
  const pattern = `${prefix}-active-orders`.replace(/[-.]/g, (c) => `\\${c}`);
  NagSuppressions.addResourceSuppressions(
    role,
    [
      {
        id: 'AwsSolutions-IAM5',
        reason:
          `\`table/${prefix}-active-orders*\` (and its \`/index/*\`) covers the active-orders tables replay creates at ` +
          'runtime (`<base>-orders` / `<base>-stores`, base `<active orders table>-rebuild-<time>`) and swaps in ' +
          'through the views alias: the projectors and the dashboard must follow the alias to tables this stack ' +
          'cannot name. `<table>/index/*` covers only the indexes of a table the service uses. ' +
          '`kms:GenerateDataKey*` / `kms:ReEncrypt*` are action families on the single data key.',
        appliesTo: [
          { regex: `/^Resource::arn:<AWS::Partition>:dynamodb:[a-z0-9-]+:[0-9]+:table\\/${pattern}(-)?\\*(\\/index\\/\\*)?$/g` },
          { regex: '/^Resource::<.*\\.Arn>\\/index\\/\\*$/g' },
          'Action::kms:GenerateDataKey*',
          'Action::kms:ReEncrypt*',
        ],
      },
    ],
    true,
  );
}

/**
 * OpenTelemetry collector configuration (JSON is valid YAML) for one service's published metrics:
 * scrape `/metrics` on localhost, keep only the published series (and label values), rename them,
 * tag them with Stage and Service, and write them as CloudWatch embedded-metric-format logs.
 */
export function collectorConfig(options: {
  service: string;
  stage: string;
  region: string;
  logGroupName: string;
  metrics: readonly PublishedMetric[];
}): string {
  const names = options.metrics.map((m) => m.prometheusName);
  const quote = (value: string) => JSON.stringify(value);
  // OTTL conditions: a metric or data point matching any of them is dropped.
  const dropOtherMetrics = `not IsMatch(name, ${quote(`^(${names.join('|')})$`)})`;
  const dropOtherDataPoints = options.metrics.flatMap((m) =>
    Object.entries(m.where ?? {}).map(
      ([label, value]) => `metric.name == ${quote(m.prometheusName)} and attributes[${quote(label)}] != ${quote(value)}`,
    ),
  );
  return JSON.stringify({
    receivers: {
      prometheus: {
        config: {
          scrape_configs: [
            {
              job_name: options.service,
              scrape_interval: '30s',
              static_configs: [{ targets: [`localhost:${PORTS.admin}`] }],
            },
          ],
        },
      },
    },
    processors: {
      'filter/published': {
        error_mode: 'ignore',
        metrics: {
          metric: [dropOtherMetrics],
          ...(dropOtherDataPoints.length ? { datapoint: dropOtherDataPoints } : {}),
        },
      },
      metricstransform: {
        transforms: options.metrics.map((m) => ({
          include: m.prometheusName,
          match_type: 'strict',
          action: 'update',
          new_name: m.cloudWatchName,
          operations: [
            { action: 'add_label', new_label: 'Stage', new_value: options.stage },
            { action: 'add_label', new_label: 'Service', new_value: options.service },
          ],
        })),
      },
      batch: { timeout: '30s' },
    },
    exporters: {
      awsemf: {
        namespace: METRICS_NAMESPACE,
        region: options.region,
        log_group_name: options.logGroupName,
        log_stream_name: options.service,
        dimension_rollup_option: 'NoDimensionRollup',
        resource_to_telemetry_conversion: { enabled: false },
        // Only Stage and Service become dimensions; other labels (rpc, outcome) are aggregated away.
        metric_declarations: [
          { dimensions: [['Stage', 'Service']], metric_name_selectors: options.metrics.map((m) => `^${m.cloudWatchName}$`) },
        ],
      },
    },
    service: {
      pipelines: {
        metrics: {
          receivers: ['prometheus'],
          processors: ['filter/published', 'metricstransform', 'batch'],
          exporters: ['awsemf'],
        },
      },
    },
  });
}
