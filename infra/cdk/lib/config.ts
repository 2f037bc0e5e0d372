/**
 * The one place that says which configuration each binary reads and where its value comes from.
 *
 * The Rust binaries read layered config whose environment overrides are `ORDERPIPE_<SECTION>__<KEY>`
 * (`__` separates sections). Keep `CONFIG_KEYS` in step with the Rust config structs: a service
 * gets exactly the keys of the capabilities it declares in `SERVICES`, and `services.ts` derives
 * its IAM grants from the same capabilities, so config and permissions cannot drift apart.
 * Services whose binary does not exist yet are `status: 'planned'`: their keys are provisional.
 */
import * as ecs from 'aws-cdk-lib/aws-ecs';
import * as secretsmanager from 'aws-cdk-lib/aws-secretsmanager';

/** Every binary built from the root Dockerfile (`--build-arg BIN=<name>`), one ECS service each. */
export const SERVICE_NAMES = [
  'command-api',
  'relay',
  'projectors',
  'saga-worker',
  'payment-worker',
  'intake-worker',
  'notification-worker',
  'dashboard',
] as const;

/** Name of a binary and of its ECS service. */
export type ServiceName = (typeof SERVICE_NAMES)[number];

/** Ports the binaries listen on. */
export const PORTS = {
  grpc: 50051,
  /** `/health` and `/metrics` (Prometheus) on every process. */
  admin: 9090,
  dashboardHttp: 8080,
  postgres: 5432,
  redshift: 5439,
} as const;

/** Namespace of the custom CloudWatch metrics the alarms use. */
export const METRICS_NAMESPACE = 'Orderpipe';

/**
 * What a service uses. Each capability brings its config keys (`CONFIG_KEYS`) and its IAM grants
 * (`grantCapability` in services.ts).
 */
export type Capability =
  | 'eventStore'
  | 'historyStore'
  | 'analyticsStore'
  | 'jwt'
  | 'grpcServer'
  | 'httpServer'
  | 'streamWrite'
  | 'streamRead'
  | 'activeOrdersRead'
  | 'activeOrdersWrite'
  | 'storeMetricsRead'
  | 'storeMetricsWrite'
  | 'leases'
  | 'parked'
  | 'intakeConsume'
  | 'paymentsConsume'
  | 'paymentsSend'
  | 'notificationsConsume'
  | 'notificationsSend'
  | 'projectorDeadLetter'
  | 'commandApiClient';

/** A Prometheus series scraped from `/metrics` and published as a CloudWatch metric. */
export interface PublishedMetric {
  /** Name in the binary's Prometheus exposition. Must match the Rust `metrics` name. */
  readonly prometheusName: string;
  /** Only the data points with these label values are published. */
  readonly where?: Record<string, string>;
  /** Name in the `Orderpipe` CloudWatch namespace (dimensions `Stage`, `Service`). */
  readonly cloudWatchName: string;
  /**
   * CloudWatch statistic the alarms read: a gauge's `Maximum`, or a histogram's `SampleCount`
   * (the number of observations, e.g. of failed commands).
   */
  readonly statistic: 'Maximum' | 'SampleCount';
}

/** How one binary runs. */
export interface ServiceSpec {
  readonly description: string;
  /**
   * `built`: the binary exists and its keys below are checked against its Rust settings.
   * `planned`: no binary yet; its keys are provisional until the binary exists.
   */
  readonly status: 'built' | 'planned';
  /**
   * Arguments after the image's entrypoint (the binary): the subcommand the service runs.
   * Unset for planned binaries, whose command line does not exist yet.
   */
  readonly command?: readonly string[];
  /**
   * Container health check on the admin endpoint's `/health` (200 while the process can do its
   * work). Only for services nothing else checks: the load balancer checks the ingress services.
   */
  readonly adminHealthCheck?: boolean;
  readonly capabilities: readonly Capability[];
  /** Served through the internal load balancer: gRPC (command API) or HTTP (dashboard). */
  readonly ingress?: 'grpc' | 'http';
  /**
   * At most one task at a time, also during deployments (old task stopped before the new one
   * starts). The relay keeps per-aggregate order by being the only publisher of the outbox.
   */
  readonly singleton?: boolean;
  /** Metrics an OpenTelemetry collector sidecar scrapes and publishes to CloudWatch for alarms. */
  readonly publishedMetrics?: readonly PublishedMetric[];
}

/** The services and what each one uses. */
export const SERVICES: Record<ServiceName, ServiceSpec> = {
  'command-api': {
    description: 'gRPC command API: validates commands, appends events and outbox rows to the event store',
    status: 'built',
    // `command-api serve`: gRPC (with grpc.health.v1, checked by the load balancer) and the admin endpoint.
    command: ['serve'],
    capabilities: ['eventStore', 'jwt', 'grpcServer'],
    ingress: 'grpc',
    // command-api records every command in this histogram; outcome="error" is a store or internal failure.
    publishedMetrics: [
      {
        prometheusName: 'orderpipe_command_duration_seconds',
        where: { outcome: 'error' },
        cloudWatchName: 'CommandErrors',
        statistic: 'SampleCount',
      },
    ],
  },
  relay: {
    description: 'Publishes the outbox to Kinesis, one record per commit, in per-aggregate order',
    status: 'built',
    command: ['run'],
    adminHealthCheck: true,
    capabilities: ['eventStore', 'streamWrite'],
    singleton: true,
    // Gauge the relay must expose: outbox rows committed but not yet acknowledged by Kinesis.
    publishedMetrics: [{ prometheusName: 'orderpipe_outbox_backlog', cloudWatchName: 'OutboxBacklog', statistic: 'Maximum' }],
  },
  projectors: {
    description: 'Consumes Kinesis (DynamoDB leases) and builds the DynamoDB, Aurora history and Redshift read models',
    status: 'built',
    command: ['run'],
    adminHealthCheck: true,
    capabilities: [
      'streamRead',
      'leases',
      'parked',
      'activeOrdersWrite',
      'storeMetricsWrite',
      'historyStore',
      'analyticsStore',
      'projectorDeadLetter',
    ],
  },
  'saga-worker': {
    description: 'Follows order events on the log and drives the order saga: payment requests, notifications, follow-up commands',
    status: 'planned',
    capabilities: ['streamRead', 'leases', 'paymentsSend', 'notificationsSend', 'commandApiClient', 'jwt'],
  },
  'payment-worker': {
    description: 'Consumes the payments FIFO queue, calls the payment gateway, reports the outcome to the command API',
    status: 'planned',
    capabilities: ['paymentsConsume', 'commandApiClient', 'jwt'],
  },
  'intake-worker': {
    description: 'Consumes orders from delivery platforms (intake queue) and places them through the command API',
    status: 'planned',
    capabilities: ['intakeConsume', 'commandApiClient', 'jwt'],
  },
  'notification-worker': {
    description: 'Consumes the notifications queue and sends customer notifications',
    status: 'planned',
    capabilities: ['notificationsConsume'],
  },
  dashboard: {
    description: 'Barista dashboard (HTTP 8080): reads the active-orders and store-metrics views',
    status: 'planned',
    capabilities: ['activeOrdersRead', 'storeMetricsRead', 'httpServer'],
    ingress: 'http',
  },
};

/** Connection settings of one PostgreSQL-protocol database. The secret holds `password`. */
export interface DatabaseSource {
  readonly host: string;
  readonly port: number;
  readonly name: string;
  readonly username: string;
  readonly secret: secretsmanager.ISecret;
}

/** A queue and its dead-letter queue. */
export interface QueueUrls {
  readonly url: string;
  readonly dlqUrl: string;
}

/** The deployed values config keys are filled from. */
export interface ConfigSources {
  readonly region: string;
  readonly eventStore: DatabaseSource;
  readonly history: DatabaseSource;
  readonly analytics: DatabaseSource;
  readonly jwtSecret: secretsmanager.ISecret;
  readonly jwtIssuer: string;
  readonly jwtAudience: string;
  readonly streamName: string;
  readonly activeOrdersTable: string;
  readonly storeMetricsTable: string;
  readonly leasesTable: string;
  readonly parkedTable: string;
  readonly intake: QueueUrls;
  readonly payments: QueueUrls;
  readonly notifications: QueueUrls;
  readonly projectorDlqUrl: string;
  readonly commandApiUrl: string;
}

/** One configuration key: who gets it, what it holds, and how its value is made. */
export interface ConfigKey {
  readonly key: string;
  /** Given to services with any of these capabilities; `all` for every service. */
  readonly when: 'all' | readonly Capability[];
  /** What the value is, for the README table. */
  readonly source: string;
  readonly plain?: (s: ConfigSources) => string;
  readonly secret?: (s: ConfigSources) => ecs.Secret;
}

function databaseKeys(prefix: string, capability: Capability, what: string, pick: (s: ConfigSources) => DatabaseSource): ConfigKey[] {
  return [
    { key: `${prefix}HOST`, when: [capability], source: `${what} endpoint`, plain: (s) => pick(s).host },
    { key: `${prefix}PORT`, when: [capability], source: `${what} port`, plain: (s) => String(pick(s).port) },
    { key: `${prefix}NAME`, when: [capability], source: `${what} database name`, plain: (s) => pick(s).name },
    { key: `${prefix}USERNAME`, when: [capability], source: `${what} user`, plain: (s) => pick(s).username },
    {
      key: `${prefix}PASSWORD`,
      when: [capability],
      source: `${what} secret, field \`password\` (Secrets Manager)`,
      secret: (s) => ecs.Secret.fromSecretsManager(pick(s).secret, 'password'),
    },
  ];
}

/** Capabilities that make a service call AWS APIs through the AWS SDK (which reads `AWS_REGION`). */
const AWS_SDK_CAPABILITIES: readonly Capability[] = [
  'streamWrite',
  'streamRead',
  'activeOrdersRead',
  'activeOrdersWrite',
  'storeMetricsRead',
  'storeMetricsWrite',
  'leases',
  'parked',
  'intakeConsume',
  'paymentsConsume',
  'paymentsSend',
  'notificationsConsume',
  'notificationsSend',
  'projectorDeadLetter',
];

/** Every configuration key the deployment sets. */
export const CONFIG_KEYS: readonly ConfigKey[] = [
  // Read by the AWS SDK's region chain (aws-support), not by the ORDERPIPE_ settings; the command
  // API has no AWS client and does not get it.
  { key: 'AWS_REGION', when: AWS_SDK_CAPABILITIES, source: 'stack region (AWS SDK)', plain: (s) => s.region },
  { key: 'ORDERPIPE_LOG__FORMAT', when: 'all', source: '`json`', plain: () => 'json' },
  // The admin endpoint stays on loopback: only the task's own collector sidecar and its container
  // health check call it. It would have to be `0.0.0.0` if anything outside the task did (a load
  // balancer health check); the load balancer checks gRPC / the dashboard's HTTP port instead.
  {
    key: 'ORDERPIPE_ADMIN__HOST',
    when: 'all',
    source: '`127.0.0.1` (called only from inside the task)',
    plain: () => '127.0.0.1',
  },
  { key: 'ORDERPIPE_ADMIN__PORT', when: 'all', source: `\`${PORTS.admin}\` (/health, /metrics)`, plain: () => String(PORTS.admin) },
  // Listeners default to 127.0.0.1; the load balancer reaches the task on its VPC address.
  { key: 'ORDERPIPE_GRPC__HOST', when: ['grpcServer'], source: '`0.0.0.0` (reachable by the load balancer)', plain: () => '0.0.0.0' },
  { key: 'ORDERPIPE_GRPC__PORT', when: ['grpcServer'], source: `\`${PORTS.grpc}\``, plain: () => String(PORTS.grpc) },
  { key: 'ORDERPIPE_HTTP__HOST', when: ['httpServer'], source: '`0.0.0.0` (reachable by the load balancer)', plain: () => '0.0.0.0' },
  {
    key: 'ORDERPIPE_HTTP__PORT',
    when: ['httpServer'],
    source: `\`${PORTS.dashboardHttp}\` (dashboard page and its /health)`,
    plain: () => String(PORTS.dashboardHttp),
  },
  ...databaseKeys('ORDERPIPE_DATABASE__', 'eventStore', 'Aurora writer (event store)', (s) => s.eventStore),
  ...databaseKeys('ORDERPIPE_HISTORY__DATABASE__', 'historyStore', 'Aurora writer (history schema)', (s) => s.history),
  ...databaseKeys('ORDERPIPE_ANALYTICS__DATABASE__', 'analyticsStore', 'Redshift Serverless workgroup', (s) => s.analytics),
  {
    key: 'ORDERPIPE_AUTH__JWT_SECRET',
    when: ['jwt'],
    source: 'JWT signing secret (Secrets Manager, whole value)',
    secret: (s) => ecs.Secret.fromSecretsManager(s.jwtSecret),
  },
  { key: 'ORDERPIPE_AUTH__ISSUER', when: ['jwt'], source: 'stage `auth.issuer`', plain: (s) => s.jwtIssuer },
  { key: 'ORDERPIPE_AUTH__AUDIENCE', when: ['jwt'], source: 'stage `auth.audience`', plain: (s) => s.jwtAudience },
  { key: 'ORDERPIPE_KINESIS__STREAM_NAME', when: ['streamRead', 'streamWrite'], source: 'event stream name', plain: (s) => s.streamName },
  {
    key: 'ORDERPIPE_DYNAMODB__ACTIVE_ORDERS_TABLE',
    when: ['activeOrdersRead', 'activeOrdersWrite'],
    source: '`active-orders` table name',
    plain: (s) => s.activeOrdersTable,
  },
  {
    key: 'ORDERPIPE_DYNAMODB__STORE_METRICS_TABLE',
    when: ['storeMetricsRead', 'storeMetricsWrite'],
    source: '`store-metrics` table name',
    plain: (s) => s.storeMetricsTable,
  },
  { key: 'ORDERPIPE_DYNAMODB__LEASES_TABLE', when: ['leases'], source: '`projector-leases` table name', plain: (s) => s.leasesTable },
  { key: 'ORDERPIPE_DYNAMODB__PARKED_TABLE', when: ['parked'], source: '`projector-parked` table name', plain: (s) => s.parkedTable },
  { key: 'ORDERPIPE_SQS__INTAKE_QUEUE_URL', when: ['intakeConsume'], source: 'intake queue URL', plain: (s) => s.intake.url },
  { key: 'ORDERPIPE_SQS__INTAKE_DLQ_URL', when: ['intakeConsume'], source: 'intake DLQ URL', plain: (s) => s.intake.dlqUrl },
  {
    key: 'ORDERPIPE_SQS__PAYMENTS_QUEUE_URL',
    when: ['paymentsConsume', 'paymentsSend'],
    source: 'payments FIFO queue URL',
    plain: (s) => s.payments.url,
  },
  { key: 'ORDERPIPE_SQS__PAYMENTS_DLQ_URL', when: ['paymentsConsume'], source: 'payments FIFO DLQ URL', plain: (s) => s.payments.dlqUrl },
  {
    key: 'ORDERPIPE_SQS__NOTIFICATIONS_QUEUE_URL',
    when: ['notificationsConsume', 'notificationsSend'],
    source: 'notifications queue URL',
    plain: (s) => s.notifications.url,
  },
  {
    key: 'ORDERPIPE_SQS__NOTIFICATIONS_DLQ_URL',
    when: ['notificationsConsume'],
    source: 'notifications DLQ URL',
    plain: (s) => s.notifications.dlqUrl,
  },
  {
    key: 'ORDERPIPE_SQS__PROJECTOR_DLQ_URL',
    when: ['projectorDeadLetter'],
    source: 'projector dead-letter queue URL (malformed log records)',
    plain: (s) => s.projectorDlqUrl,
  },
  {
    key: 'ORDERPIPE_COMMAND_API__URL',
    when: ['commandApiClient'],
    source: 'internal load balancer, `https://<api record>`',
    plain: (s) => s.commandApiUrl,
  },
];

/** The services whose binary does not exist yet: their keys are provisional. */
export function isPlanned(service: ServiceName): boolean {
  return SERVICES[service].status === 'planned';
}

/** Whether a service with these capabilities gets this key. */
export function keyApplies(key: ConfigKey, capabilities: readonly Capability[]): boolean {
  return key.when === 'all' || key.when.some((c) => capabilities.includes(c));
}

/** The plain environment and the Secrets Manager secrets of one service's container. */
export interface ServiceEnvironment {
  readonly environment: Record<string, string>;
  readonly secrets: Record<string, ecs.Secret>;
}

/** Builds the container configuration of `service` from the deployed resources. */
export function serviceEnvironment(service: ServiceName, sources: ConfigSources): ServiceEnvironment {
  const environment: Record<string, string> = {};
  const secrets: Record<string, ecs.Secret> = {};
  for (const key of CONFIG_KEYS) {
    if (!keyApplies(key, SERVICES[service].capabilities)) continue;
    if (key.secret) secrets[key.key] = key.secret(sources);
    else if (key.plain) environment[key.key] = key.plain(sources);
  }
  return { environment, secrets };
}

/** Names of the keys each service receives, for documentation and tests. */
export function keysOf(service: ServiceName): string[] {
  return CONFIG_KEYS.filter((k) => keyApplies(k, SERVICES[service].capabilities)).map((k) => k.key);
}
