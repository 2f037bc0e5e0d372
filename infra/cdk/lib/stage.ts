import { RemovalPolicy } from 'aws-cdk-lib';
import * as logs from 'aws-cdk-lib/aws-logs';
import { Node } from 'constructs';
import { SERVICE_NAMES, ServiceName } from './config';

/** Sizes of one ECS service in a stage. */
export interface ServiceSizing {
  readonly desiredCount: number;
  /** Upper bound for autoscaling; services without it do not autoscale. */
  readonly maxCount?: number;
  readonly cpu: number;
  readonly memoryMiB: number;
}

/**
 * Everything that differs between stages. Read from the `stages.<name>` object in cdk.json
 * context, so dev and prod share all the code and differ only in these values.
 */
export interface StageConfig {
  readonly name: string;
  /** Prefix of every physical name: `orderpipe-<stage>`. */
  readonly prefix: string;
  readonly region: string;
  readonly availabilityZones: string[];
  readonly vpcCidr: string;
  readonly natGateways: number;
  readonly removalPolicy: 'destroy' | 'retain';
  readonly deletionProtection: boolean;
  readonly logRetentionDays: number;
  readonly kinesisRetentionHours: number;
  readonly aurora: {
    readonly minCapacityAcu: number;
    readonly maxCapacityAcu: number;
    readonly readers: number;
    readonly backupRetentionDays: number;
  };
  readonly redshift: { readonly baseCapacityRpu: number; readonly maxCapacityRpu: number };
  readonly dns: {
    readonly hostedZoneId: string;
    readonly hostedZoneName: string;
    readonly apiRecord: string;
    readonly dashboardRecord: string;
  };
  /**
   * The token issuer: its `iss`, the `aud` it mints for, and the URL of its JWKS (e.g. a Cognito
   * user pool's `https://cognito-idp.<region>.amazonaws.com/<pool id>/.well-known/jwks.json`).
   */
  readonly auth: { readonly issuer: string; readonly audience: string; readonly jwksUrl: string };
  /** Networks outside the VPC (VPN, office) allowed to reach the internal load balancer. */
  readonly internalClientCidrs: string[];
  readonly services: Record<ServiceName, ServiceSizing>;
  /** Size of a `replay` task (one-off, started by an operator). */
  readonly replay: { readonly cpu: number; readonly memoryMiB: number };
  readonly alarms: {
    /** Kinesis iterator age and each consuming service's lag behind the log. */
    readonly iteratorAgeMs: number;
    readonly outboxBacklog: number;
    readonly commandErrorsPer5Min: number;
    readonly loadBalancer5xxPer5Min: number;
  };
  readonly images: {
    readonly ecrRepositoryPrefix: string;
    readonly tag: string;
    readonly adotCollector: string;
  };
  /** Optional e-mail address subscribed to the alarm topic. */
  readonly alarmEmail?: string;
  /**
   * Optional OTLP/gRPC collector (e.g. `http://otel-collector.internal:4317`, an ADOT collector
   * exporting to X-Ray) that every long-running process sends its traces to; unset, no process
   * records traces.
   */
  readonly otlpEndpoint?: string;
  /**
   * The relay's `relay.max_commits_per_record`: 1 (the default) writes one plain record per commit,
   * which readers of every build read, so a deploy may upgrade the relay before its readers. Raise
   * it (e.g. to 100) once every reader runs a build that unpacks (the projectors, the flows and
   * `replay` of the same image tag or later): records then pack several commits of a shard.
   */
  readonly relayCommitsPerRecord: number;
  /**
   * The projectors' `dynamodb.inventory_marker`: `item` (the default) advances the active-orders
   * view's inventory marker after every batch, which writers of every build read; `sku_items`
   * leaves the progress in the stock items, one write fewer per store inventory and batch. Set it
   * once every writer of the view (the projectors and `replay` of the same image tag or later)
   * reads the progress from the stock items.
   */
  readonly inventoryMarker: InventoryMarker;
}

/** Where the projectors record each store inventory's progress (`dynamodb.inventory_marker`). */
export type InventoryMarker = 'item' | 'sku_items';

/** Removal policy for stateful resources that support snapshots (Aurora). */
export function snapshotOrDestroy(stage: StageConfig): RemovalPolicy {
  return stage.removalPolicy === 'retain' ? RemovalPolicy.SNAPSHOT : RemovalPolicy.DESTROY;
}

/** Removal policy for other stateful resources (tables, stream, queues, keys). */
export function retainOrDestroy(stage: StageConfig): RemovalPolicy {
  return stage.removalPolicy === 'retain' ? RemovalPolicy.RETAIN : RemovalPolicy.DESTROY;
}

/** Log retention of the stage, checked against the values CloudWatch Logs accepts. */
export function logRetention(stage: StageConfig): logs.RetentionDays {
  const allowed = Object.values(logs.RetentionDays).filter((v): v is number => typeof v === 'number');
  if (!allowed.includes(stage.logRetentionDays)) {
    throw new Error(`logRetentionDays ${stage.logRetentionDays} is not one of ${allowed.join(', ')}`);
  }
  return stage.logRetentionDays as logs.RetentionDays;
}

/** `item` or `sku_items`, from a stage's config or the command line. */
function inventoryMarker(value: unknown): InventoryMarker {
  if (value === 'item' || value === 'sku_items') {
    return value;
  }
  throw new Error(`inventoryMarker must be item or sku_items, not ${JSON.stringify(value)}`);
}

/** A whole number at least 1, from a stage's config or the command line (`-c key=100`: a string). */
function atLeastOne(value: unknown, what: string): number {
  const number = Number(value);
  if (!Number.isInteger(number) || number < 1) {
    throw new Error(`${what} must be a whole number at least 1, not ${JSON.stringify(value)}`);
  }
  return number;
}

function required<T>(value: T | undefined, what: string): T {
  if (value === undefined || value === null || value === '') {
    throw new Error(`missing CDK context value: ${what}`);
  }
  return value;
}

/**
 * Reads the stage named by the `stage` context key (`-c stage=prod`), default `dev`.
 * Top-level context keys `imageTag`, `hostedZoneId`, `hostedZoneName`, `alarmEmail`, `otlpEndpoint`, `region`,
 * `relayCommitsPerRecord`, `inventoryMarker` override the stage's values so a deploy can pass them on the command
 * line.
 */
export function loadStageConfig(node: Node, defaultRegion?: string): StageConfig {
  const name: string = node.tryGetContext('stage') ?? 'dev';
  const stages = required(node.tryGetContext('stages'), 'stages');
  const raw = stages[name];
  if (!raw) {
    throw new Error(`unknown stage '${name}': expected one of ${Object.keys(stages).join(', ')}`);
  }
  const region: string = required(node.tryGetContext('region') ?? defaultRegion, 'region (or CDK_DEFAULT_REGION)');
  const azContext = node.tryGetContext('availabilityZones');
  const availabilityZones: string[] = azContext
    ? (Array.isArray(azContext) ? azContext : String(azContext).split(','))
    : ['a', 'b', 'c'].map((suffix) => `${region}${suffix}`);
  if (availabilityZones.length < 3) {
    throw new Error('Redshift Serverless needs subnets in at least three availability zones');
  }
  for (const service of SERVICE_NAMES) {
    required(raw.services?.[service], `stages.${name}.services.${service}`);
  }
  if (!['destroy', 'retain'].includes(raw.removalPolicy)) {
    throw new Error(`stages.${name}.removalPolicy must be 'destroy' or 'retain'`);
  }
  return {
    name,
    prefix: `orderpipe-${name}`,
    region,
    availabilityZones,
    vpcCidr: required(raw.vpcCidr, `stages.${name}.vpcCidr`),
    natGateways: required(raw.natGateways, `stages.${name}.natGateways`),
    removalPolicy: raw.removalPolicy,
    deletionProtection: Boolean(raw.deletionProtection),
    logRetentionDays: required(raw.logRetentionDays, `stages.${name}.logRetentionDays`),
    kinesisRetentionHours: raw.kinesisRetentionHours ?? 168,
    aurora: required(raw.aurora, `stages.${name}.aurora`),
    redshift: required(raw.redshift, `stages.${name}.redshift`),
    dns: {
      hostedZoneId: required(node.tryGetContext('hostedZoneId'), 'hostedZoneId'),
      hostedZoneName: required(node.tryGetContext('hostedZoneName'), 'hostedZoneName'),
      apiRecord: required(raw.dns?.apiRecord, `stages.${name}.dns.apiRecord`),
      dashboardRecord: required(raw.dns?.dashboardRecord, `stages.${name}.dns.dashboardRecord`),
    },
    auth: {
      issuer: required(raw.auth?.issuer, `stages.${name}.auth.issuer`),
      audience: required(raw.auth?.audience, `stages.${name}.auth.audience`),
      jwksUrl: required(raw.auth?.jwksUrl, `stages.${name}.auth.jwksUrl`),
    },
    internalClientCidrs: raw.internalClientCidrs ?? [],
    services: raw.services,
    replay: required(raw.replay, `stages.${name}.replay`),
    alarms: required(raw.alarms, `stages.${name}.alarms`),
    images: {
      ecrRepositoryPrefix: node.tryGetContext('ecrRepositoryPrefix') ?? 'orderpipe',
      tag: required(node.tryGetContext('imageTag'), 'imageTag'),
      adotCollector: required(node.tryGetContext('adotCollectorImage'), 'adotCollectorImage'),
    },
    alarmEmail: node.tryGetContext('alarmEmail') ?? raw.alarmEmail,
    otlpEndpoint: node.tryGetContext('otlpEndpoint') ?? raw.otlpEndpoint,
    relayCommitsPerRecord: atLeastOne(
      node.tryGetContext('relayCommitsPerRecord') ?? raw.relayCommitsPerRecord ?? 1,
      'relayCommitsPerRecord',
    ),
    inventoryMarker: inventoryMarker(node.tryGetContext('inventoryMarker') ?? raw.inventoryMarker ?? 'item'),
  };
}
