/**
 * The one place that says which configuration each process reads and where its value comes from.
 *
 * The Rust binaries read layered config whose environment overrides are `ORDERPIPE_<SECTION>__<KEY>`
 * (`__` separates sections). `CONFIG_KEYS` is held against what the binaries read:
 * `settings-keys.json` (the binaries' `settings-keys` output, kept current by a Rust test) lists
 * each binary's keys and which it requires, and test/config.test.ts checks that every process sets
 * only keys its binary reads and every key it requires. A process gets exactly the keys of
 * the capabilities it declares in `SERVICES`, and `services.ts` derives its IAM grants from the same
 * capabilities, so config and permissions cannot drift apart. Keys with a default in the binary
 * that suits AWS (pool sizes, timeouts, schema names) are not set.
 */
import * as ecs from 'aws-cdk-lib/aws-ecs';
import * as secretsmanager from 'aws-cdk-lib/aws-secretsmanager';

/**
 * The long-running processes, one ECS service each. The three `flows-*` services run the same
 * `flows run` binary with different `ORDERPIPE_FLOWS__WORKERS`, so each scales on its own load:
 * payments with the payment queue and the gateway's latency, intake with the delivery platforms,
 * the log consumers with the stream's shards.
 */
export const SERVICE_NAMES = [
  'command-api',
  'relay',
  'projectors',
  'flows-log',
  'flows-payments',
  'flows-intake',
  'dashboard',
] as const;

/** Name of an ECS service. */
export type ServiceName = (typeof SERVICE_NAMES)[number];

/** Operator tools deployed as task definitions without a service (`aws ecs run-task`). */
export const ONE_OFF_TASK_NAMES = ['replay'] as const;

/** Name of a one-off task definition. */
export type OneOffTaskName = (typeof ONE_OFF_TASK_NAMES)[number];

/** Every process the deployment describes: the services, then the one-off tasks. */
export const PROCESS_NAMES = [...SERVICE_NAMES, ...ONE_OFF_TASK_NAMES] as const;

/** Name of a service or one-off task (its container and task definition family). */
export type ProcessName = ServiceName | OneOffTaskName;

/**
 * The binaries the root Dockerfile builds (`--build-arg BIN=<name>`), one ECR repository
 * `<ecrRepositoryPrefix>/<binary>` each.
 */
export type BinaryName = 'command-api' | 'relay' | 'projectors' | 'flows' | 'dashboard' | 'replay';

/** The workers of the `flows` binary (`crates/queues/flows/src/settings.rs` `WORKERS`). */
export type FlowsWorker = 'order_saga' | 'notifications' | 'purchase_orders' | 'payments' | 'intake';

/** Ports the binaries listen on. */
export const PORTS = {
  grpc: 50051,
  /** `/health` and `/metrics` (Prometheus) on every long-running process (overrides each binary's default). */
  admin: 9090,
  dashboardHttp: 8080,
  postgres: 5432,
  redshift: 5439,
} as const;

/** Namespace of the custom CloudWatch metrics the alarms use. */
export const METRICS_NAMESPACE = 'Orderpipe';

/**
 * What a process uses. Each capability brings its config keys (`CONFIG_KEYS`) and its IAM grants
 * and network access (`grantCapability` in services.ts).
 */
export type Capability =
  /** `/health` and `/metrics` on the admin port (every long-running process). */
  | 'adminEndpoint'
  /** `log.format` (every long-running process; replay writes plain lines for an operator). */
  | 'structuredLogs'
  | 'eventStore'
  | 'historyStore'
  /** The history schema, read only (the dashboard's order timeline, the command API's history queries). */
  | 'historyRead'
  | 'analyticsStore'
  /** Loading the analytics view from the log, micro-batched (`analytics_flush.*`: projectors). */
  | 'analyticsLoad'
  /** Verifies bearer tokens against the issuer's public keys (JWKS URL; no signing key). */
  | 'jwt'
  /** Calls the command API with a service token the issuer minted (Secrets Manager; no signing key). */
  | 'serviceToken'
  | 'grpcServer'
  | 'httpServer'
  | 'streamWrite'
  | 'streamRead'
  /** Reading the stream from a point in time (`replay rebuild --from-stream [--since]`). */
  | 'streamReplay'
  /** The live active-orders view: the orders and stores tables, deployed or swapped in by replay. */
  | 'activeOrdersWrite'
  | 'activeOrdersRead'
  /** The views table's alias item naming the live active-orders tables. */
  | 'viewsRead'
  /** Building, swapping and dropping active-orders tables, and replay's progress items. */
  | 'viewsRebuild'
  | 'leases'
  | 'parked'
  /** `flows.workers`: which workers of the `flows` binary this service runs. */
  | 'flowsWorkers'
  | 'intakeConsume'
  | 'paymentsConsume'
  | 'paymentsSend'
  | 'notificationsSend'
  | 'purchaseOrdersSend'
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

/** How one process runs. */
export interface ServiceSpec {
  readonly description: string;
  /** The binary (and so the image) the process runs. */
  readonly binary: BinaryName;
  /** Arguments after the image's entrypoint (the binary): its subcommand. */
  readonly command: readonly string[];
  /** For `flowsWorkers`: the value of `ORDERPIPE_FLOWS__WORKERS`. */
  readonly flowsWorkers?: readonly FlowsWorker[];
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

/** Lag of the slowest shard of any consumer group in the process (projector runtime gauge). */
const CONSUMER_LAG: PublishedMetric = {
  prometheusName: 'orderpipe_projector_millis_behind_latest',
  cloudWatchName: 'ConsumerLagMillis',
  statistic: 'Maximum',
};

/** Every process and what it uses. */
export const SERVICES: Record<ProcessName, ServiceSpec> = {
  'command-api': {
    description:
      'gRPC command API: validates commands, appends events and outbox rows to the event store; answers history queries (ListOrders, ListLoyaltyTransactions) from the history schema, read only',
    binary: 'command-api',
    // `command-api serve`: gRPC (with grpc.health.v1, checked by the load balancer) and the admin endpoint.
    command: ['serve'],
    capabilities: ['adminEndpoint', 'structuredLogs', 'eventStore', 'jwt', 'grpcServer', 'historyRead'],
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
    description:
      'Publishes the outbox to Kinesis in per-aggregate order: one record per commit, or several commits of a shard per record once every reader unpacks (relayCommitsPerRecord)',
    binary: 'relay',
    command: ['run'],
    adminHealthCheck: true,
    capabilities: ['adminEndpoint', 'structuredLogs', 'eventStore', 'streamWrite'],
    singleton: true,
    // Gauge the relay exposes: outbox rows committed but not yet acknowledged by Kinesis.
    publishedMetrics: [{ prometheusName: 'orderpipe_outbox_backlog', cloudWatchName: 'OutboxBacklog', statistic: 'Maximum' }],
  },
  projectors: {
    description: 'Consumes Kinesis (DynamoDB leases) and builds the DynamoDB, Aurora history and Redshift read models',
    binary: 'projectors',
    command: ['run'],
    adminHealthCheck: true,
    capabilities: [
      'adminEndpoint',
      'structuredLogs',
      'streamRead',
      'leases',
      'parked',
      'activeOrdersWrite',
      'viewsRead',
      'historyStore',
      'analyticsStore',
      'analyticsLoad',
      'projectorDeadLetter',
    ],
    publishedMetrics: [CONSUMER_LAG],
  },
  'flows-log': {
    description:
      'flows run: the order saga, notifications and purchase orders, consumer groups on the event log (leases shared with the projectors)',
    binary: 'flows',
    command: ['run'],
    flowsWorkers: ['order_saga', 'notifications', 'purchase_orders'],
    adminHealthCheck: true,
    capabilities: [
      'adminEndpoint',
      'structuredLogs',
      'flowsWorkers',
      'serviceToken',
      'commandApiClient',
      'streamRead',
      'leases',
      'parked',
      'projectorDeadLetter',
      // The saga requests charges and refunds; notifications and purchase orders are put on their queues.
      'paymentsSend',
      'notificationsSend',
      'purchaseOrdersSend',
    ],
    publishedMetrics: [CONSUMER_LAG],
  },
  'flows-payments': {
    description: 'flows run: the payment processor, consuming the payments FIFO queue and recording outcomes through the command API',
    binary: 'flows',
    command: ['run'],
    flowsWorkers: ['payments'],
    adminHealthCheck: true,
    capabilities: ['adminEndpoint', 'structuredLogs', 'flowsWorkers', 'serviceToken', 'commandApiClient', 'paymentsConsume'],
  },
  'flows-intake': {
    description: 'flows run: delivery-platform intake, consuming the intake queue and placing orders through the command API',
    binary: 'flows',
    command: ['run'],
    flowsWorkers: ['intake'],
    adminHealthCheck: true,
    capabilities: ['adminEndpoint', 'structuredLogs', 'flowsWorkers', 'serviceToken', 'commandApiClient', 'intakeConsume'],
  },
  dashboard: {
    description: 'Barista dashboard (HTTP 8080): reads the live active-orders view and the order history, advances orders through the command API',
    binary: 'dashboard',
    command: ['serve'],
    capabilities: [
      'adminEndpoint',
      'structuredLogs',
      'httpServer',
      'jwt',
      'commandApiClient',
      'activeOrdersRead',
      'viewsRead',
      'historyRead',
    ],
    ingress: 'http',
  },
  replay: {
    description: 'Operator tool: rebuilds a read model from the event store (or the stream) into a fresh target and swaps it in',
    binary: 'replay',
    // Harmless default for a run without overrides: lists the live views and their state.
    command: ['list'],
    capabilities: ['eventStore', 'historyStore', 'analyticsStore', 'streamReplay', 'viewsRebuild'],
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
  /** Where the issuer publishes its public keys; no service but the issuer holds a signing key. */
  readonly jwksUrl: string;
  readonly jwtIssuer: string;
  readonly jwtAudience: string;
  /** The flows' service token, minted by the issuer and put here by an operator (DEPLOYING.md). */
  readonly flowsServiceToken: secretsmanager.ISecret;
  readonly streamName: string;
  readonly activeOrdersTable: string;
  readonly storeMetricsTable: string;
  readonly viewsTable: string;
  readonly leasesTable: string;
  readonly parkedTable: string;
  readonly intake: QueueUrls;
  readonly payments: QueueUrls;
  readonly notifications: QueueUrls;
  readonly purchaseOrders: QueueUrls;
  readonly projectorDlqUrl: string;
  readonly commandApiUrl: string;
  /** Where traces go (stage `otlpEndpoint`); unset: no traces. */
  readonly otlpEndpoint?: string;
  /** Commits per Kinesis record (stage `relayCommitsPerRecord`; 1 until every reader unpacks). */
  readonly relayCommitsPerRecord: number;
  /** The projectors' inventory marker (stage `inventoryMarker`; `item` until every writer reads the stock items). */
  readonly inventoryMarker: string;
}

/** One configuration key: who gets it, what it holds, and how its value is made. */
export interface ConfigKey {
  readonly key: string;
  /** Given to processes with any of these capabilities. */
  readonly when: readonly Capability[];
  /** What the value is, for the README table. */
  readonly source: string;
  /** The value; `undefined` leaves an optional key unset in this deployment. */
  readonly plain?: (s: ConfigSources, process: ServiceSpec) => string | undefined;
  readonly secret?: (s: ConfigSources) => ecs.Secret;
}

function databaseKeys(prefix: string, capabilities: readonly Capability[], what: string, pick: (s: ConfigSources) => DatabaseSource): ConfigKey[] {
  return [
    { key: `${prefix}HOST`, when: capabilities, source: `${what} endpoint`, plain: (s) => pick(s).host },
    { key: `${prefix}PORT`, when: capabilities, source: `${what} port`, plain: (s) => String(pick(s).port) },
    { key: `${prefix}NAME`, when: capabilities, source: `${what} database name`, plain: (s) => pick(s).name },
    { key: `${prefix}USERNAME`, when: capabilities, source: `${what} user`, plain: (s) => pick(s).username },
    {
      key: `${prefix}PASSWORD`,
      when: capabilities,
      source: `${what} secret, field \`password\` (Secrets Manager)`,
      secret: (s) => ecs.Secret.fromSecretsManager(pick(s).secret, 'password'),
    },
  ];
}

/** Capabilities that make a process call AWS APIs through the AWS SDK (which reads `AWS_REGION`). */
const AWS_SDK_CAPABILITIES: readonly Capability[] = [
  'streamWrite',
  'streamRead',
  'streamReplay',
  'activeOrdersRead',
  'activeOrdersWrite',
  'viewsRead',
  'viewsRebuild',
  'leases',
  'parked',
  'intakeConsume',
  'paymentsConsume',
  'paymentsSend',
  'notificationsSend',
  'purchaseOrdersSend',
  'projectorDeadLetter',
];

/** The `flows` binary needs a queue's URL and its DLQ's URL together (`Settings::queue`). */
const PAYMENTS_QUEUE: readonly Capability[] = ['paymentsConsume', 'paymentsSend'];
const NOTIFICATIONS_QUEUE: readonly Capability[] = ['notificationsSend'];
const PURCHASE_ORDERS_QUEUE: readonly Capability[] = ['purchaseOrdersSend'];
const INTAKE_QUEUE: readonly Capability[] = ['intakeConsume'];
const ACTIVE_ORDERS_VIEW: readonly Capability[] = ['activeOrdersRead', 'activeOrdersWrite', 'viewsRebuild'];

/** Every configuration key the deployment sets. */
export const CONFIG_KEYS: readonly ConfigKey[] = [
  // Read by the AWS SDK's region chain (aws-support), not by the ORDERPIPE_ settings; the command
  // API has no AWS client and does not get it.
  { key: 'AWS_REGION', when: AWS_SDK_CAPABILITIES, source: 'stack region (AWS SDK)', plain: (s) => s.region },
  { key: 'ORDERPIPE_LOG__FORMAT', when: ['structuredLogs'], source: '`json`', plain: () => 'json' },
  {
    key: 'ORDERPIPE_LOG__OTLP_ENDPOINT',
    when: ['structuredLogs'],
    source: 'stage `otlpEndpoint` (context or stage config; unset: no traces are recorded)',
    plain: (s) => s.otlpEndpoint,
  },
  // The admin endpoint stays on loopback: only the task's own collector sidecar and its container
  // health check call it. It would have to be `0.0.0.0` if anything outside the task did (a load
  // balancer health check); the load balancer checks gRPC / the dashboard's HTTP port instead.
  {
    key: 'ORDERPIPE_ADMIN__HOST',
    when: ['adminEndpoint'],
    source: '`127.0.0.1` (called only from inside the task)',
    plain: () => '127.0.0.1',
  },
  {
    key: 'ORDERPIPE_ADMIN__PORT',
    when: ['adminEndpoint'],
    source: `\`${PORTS.admin}\` (/health, /metrics; one port for every binary, whose defaults differ)`,
    plain: () => String(PORTS.admin),
  },
  // Listeners default to 127.0.0.1; the load balancer reaches the task on its VPC address.
  { key: 'ORDERPIPE_GRPC__HOST', when: ['grpcServer'], source: '`0.0.0.0` (reachable by the load balancer)', plain: () => '0.0.0.0' },
  { key: 'ORDERPIPE_GRPC__PORT', when: ['grpcServer'], source: `\`${PORTS.grpc}\``, plain: () => String(PORTS.grpc) },
  // The load balancer reaches the API over TLS and does not check the target's certificate, so a
  // certificate made at each start is enough: no key to store, ship or rotate (DEPLOYING.md).
  {
    key: 'ORDERPIPE_GRPC__TLS__SELF_SIGNED',
    when: ['grpcServer'],
    source: '`true` (TLS from the load balancer, with a certificate made at start)',
    plain: () => 'true',
  },
  { key: 'ORDERPIPE_HTTP__HOST', when: ['httpServer'], source: '`0.0.0.0` (reachable by the load balancer)', plain: () => '0.0.0.0' },
  {
    key: 'ORDERPIPE_HTTP__PORT',
    when: ['httpServer'],
    source: `\`${PORTS.dashboardHttp}\` (dashboard page and its /health)`,
    plain: () => String(PORTS.dashboardHttp),
  },
  ...databaseKeys('ORDERPIPE_DATABASE__', ['eventStore'], 'Aurora writer (event store)', (s) => s.eventStore),
  ...databaseKeys('ORDERPIPE_HISTORY__DATABASE__', ['historyStore', 'historyRead'], 'Aurora writer (history schema)', (s) => s.history),
  ...databaseKeys('ORDERPIPE_ANALYTICS__DATABASE__', ['analyticsStore'], 'Redshift Serverless workgroup', (s) => s.analytics),
  // Redshift takes few large loads best: one load a minute per shard (docs/architecture.md,
  // "Analytics"); the analytics view is then at most about a minute behind the log.
  {
    key: 'ORDERPIPE_ANALYTICS_FLUSH__INTERVAL_MS',
    when: ['analyticsLoad'],
    source: '`60000` (one Redshift load a minute per shard)',
    plain: () => '60000',
  },
  {
    key: 'ORDERPIPE_ANALYTICS_FLUSH__MAX_COMMITS',
    when: ['analyticsLoad'],
    source: '`20000` (a load starts early once this many commits wait)',
    plain: () => '20000',
  },
  {
    key: 'ORDERPIPE_AUTH__JWKS_URL',
    when: ['jwt'],
    source: "stage `auth.jwksUrl`: the issuer's JWKS (public keys only)",
    plain: (s) => s.jwksUrl,
  },
  { key: 'ORDERPIPE_AUTH__ISSUER', when: ['jwt'], source: 'stage `auth.issuer`', plain: (s) => s.jwtIssuer },
  { key: 'ORDERPIPE_AUTH__AUDIENCE', when: ['jwt'], source: 'stage `auth.audience`', plain: (s) => s.jwtAudience },
  {
    key: 'ORDERPIPE_AUTH__SERVICE_TOKEN',
    when: ['serviceToken'],
    source: 'the flows\' `service` token, minted by the issuer (Secrets Manager, whole value)',
    secret: (s) => ecs.Secret.fromSecretsManager(s.flowsServiceToken),
  },
  {
    key: 'ORDERPIPE_KINESIS__STREAM_NAME',
    when: ['streamRead', 'streamWrite', 'streamReplay'],
    source: 'event stream name',
    plain: (s) => s.streamName,
  },
  {
    key: 'ORDERPIPE_RELAY__MAX_COMMITS_PER_RECORD',
    when: ['streamWrite'],
    source:
      'stage `relayCommitsPerRecord` (context or stage config; default 1, one plain record per commit): raise once every reader runs a build that unpacks',
    plain: (s) => String(s.relayCommitsPerRecord),
  },
  {
    key: 'ORDERPIPE_DYNAMODB__INVENTORY_MARKER',
    when: ['activeOrdersWrite'],
    source:
      'stage `inventoryMarker` (context or stage config; default item, the marker after every batch): sku_items once every writer of the view reads the progress from the stock items',
    plain: (s) => s.inventoryMarker,
  },
  {
    key: 'ORDERPIPE_DYNAMODB__ACTIVE_ORDERS_TABLE',
    when: ACTIVE_ORDERS_VIEW,
    source: '`active-orders` table name (live until replay swaps a rebuild in)',
    plain: (s) => s.activeOrdersTable,
  },
  {
    key: 'ORDERPIPE_DYNAMODB__STORE_METRICS_TABLE',
    when: ACTIVE_ORDERS_VIEW,
    source: '`store-metrics` table name (live until replay swaps a rebuild in)',
    plain: (s) => s.storeMetricsTable,
  },
  {
    key: 'ORDERPIPE_DYNAMODB__VIEWS_TABLE',
    when: ['viewsRead', 'viewsRebuild'],
    source: '`views` table name (alias of the live active-orders tables, replay progress)',
    plain: (s) => s.viewsTable,
  },
  { key: 'ORDERPIPE_DYNAMODB__LEASES_TABLE', when: ['leases'], source: '`projector-leases` table name', plain: (s) => s.leasesTable },
  { key: 'ORDERPIPE_DYNAMODB__PARKED_TABLE', when: ['parked'], source: '`projector-parked` table name', plain: (s) => s.parkedTable },
  {
    key: 'ORDERPIPE_FLOWS__WORKERS',
    when: ['flowsWorkers'],
    source: 'the service\'s workers (`SERVICES[...].flowsWorkers`)',
    plain: (_, process) => {
      if (!process.flowsWorkers?.length) throw new Error(`${process.description}: flowsWorkers capability without workers`);
      return process.flowsWorkers.join(',');
    },
  },
  { key: 'ORDERPIPE_SQS__INTAKE_QUEUE_URL', when: INTAKE_QUEUE, source: 'intake queue URL', plain: (s) => s.intake.url },
  { key: 'ORDERPIPE_SQS__INTAKE_DLQ_URL', when: INTAKE_QUEUE, source: 'intake DLQ URL', plain: (s) => s.intake.dlqUrl },
  { key: 'ORDERPIPE_SQS__PAYMENTS_QUEUE_URL', when: PAYMENTS_QUEUE, source: 'payments FIFO queue URL', plain: (s) => s.payments.url },
  { key: 'ORDERPIPE_SQS__PAYMENTS_DLQ_URL', when: PAYMENTS_QUEUE, source: 'payments FIFO DLQ URL', plain: (s) => s.payments.dlqUrl },
  {
    key: 'ORDERPIPE_SQS__NOTIFICATIONS_QUEUE_URL',
    when: NOTIFICATIONS_QUEUE,
    source: 'notifications queue URL',
    plain: (s) => s.notifications.url,
  },
  {
    key: 'ORDERPIPE_SQS__NOTIFICATIONS_DLQ_URL',
    when: NOTIFICATIONS_QUEUE,
    source: 'notifications DLQ URL',
    plain: (s) => s.notifications.dlqUrl,
  },
  {
    key: 'ORDERPIPE_SQS__PURCHASE_ORDERS_QUEUE_URL',
    when: PURCHASE_ORDERS_QUEUE,
    source: 'purchase orders FIFO queue URL',
    plain: (s) => s.purchaseOrders.url,
  },
  {
    key: 'ORDERPIPE_SQS__PURCHASE_ORDERS_DLQ_URL',
    when: PURCHASE_ORDERS_QUEUE,
    source: 'purchase orders FIFO DLQ URL',
    plain: (s) => s.purchaseOrders.dlqUrl,
  },
  {
    key: 'ORDERPIPE_SQS__PROJECTOR_DLQ_URL',
    when: ['projectorDeadLetter'],
    source: 'projector dead-letter queue URL (malformed log records, poison commits)',
    plain: (s) => s.projectorDlqUrl,
  },
  {
    key: 'ORDERPIPE_COMMAND_API__URL',
    when: ['commandApiClient'],
    source: 'internal load balancer, `https://<dns.apiRecord>.<zone>` (its ACM certificate, trusted through the system roots)',
    plain: (s) => s.commandApiUrl,
  },
];

/** Whether a process with these capabilities gets this key. */
export function keyApplies(key: ConfigKey, capabilities: readonly Capability[]): boolean {
  return key.when.some((c) => capabilities.includes(c));
}

/** The plain environment and the Secrets Manager secrets of one process's container. */
export interface ServiceEnvironment {
  readonly environment: Record<string, string>;
  readonly secrets: Record<string, ecs.Secret>;
}

/** Builds the container configuration of `process` from the deployed resources. */
export function serviceEnvironment(process: ProcessName, sources: ConfigSources): ServiceEnvironment {
  const spec = SERVICES[process];
  const environment: Record<string, string> = {};
  const secrets: Record<string, ecs.Secret> = {};
  for (const key of CONFIG_KEYS) {
    if (!keyApplies(key, spec.capabilities)) continue;
    if (key.secret) {
      secrets[key.key] = key.secret(sources);
    } else if (key.plain) {
      const value = key.plain(sources, spec);
      if (value !== undefined) environment[key.key] = value;
    }
  }
  return { environment, secrets };
}

/** Names of the keys each process receives, for documentation and tests. */
export function keysOf(process: ProcessName): string[] {
  return CONFIG_KEYS.filter((k) => keyApplies(k, SERVICES[process].capabilities)).map((k) => k.key);
}
