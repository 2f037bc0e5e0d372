import { Duration } from 'aws-cdk-lib';
import * as cloudwatch from 'aws-cdk-lib/aws-cloudwatch';
import * as cwActions from 'aws-cdk-lib/aws-cloudwatch-actions';
import * as elbv2 from 'aws-cdk-lib/aws-elasticloadbalancingv2';
import * as iam from 'aws-cdk-lib/aws-iam';
import * as kms from 'aws-cdk-lib/aws-kms';
import * as sns from 'aws-cdk-lib/aws-sns';
import * as subscriptions from 'aws-cdk-lib/aws-sns-subscriptions';
import { Construct } from 'constructs';
import { METRICS_NAMESPACE, SERVICE_NAMES, ServiceName, SERVICES } from './config';
import { ACTIVE_ORDERS_VIEW_TAG, DataStores } from './data-stores';
import { Messaging } from './messaging';
import { Services } from './services';
import { StageConfig } from './stage';

export interface ObservabilityProps {
  readonly stage: StageConfig;
  readonly key: kms.IKey;
  readonly data: DataStores;
  readonly messaging: Messaging;
  readonly services: Services;
}

/**
 * Alarms (to an encrypted SNS topic) on the signals that mean orders are stuck or lost: projector
 * lag (iterator age), dead-letter queue depth, outbox backlog, command errors and load-balancer
 * 5xx; and one CloudWatch dashboard for the pipeline.
 */
export class Observability extends Construct {
  readonly alarmTopic: sns.Topic;
  readonly alarms: cloudwatch.Alarm[] = [];
  readonly dashboard: cloudwatch.Dashboard;

  constructor(scope: Construct, id: string, props: ObservabilityProps) {
    super(scope, id);
    const { stage, key, data, messaging, services } = props;
    const thresholds = stage.alarms;

    this.alarmTopic = new sns.Topic(this, 'AlarmTopic', {
      topicName: `${stage.prefix}-alarms`,
      displayName: `orderpipe ${stage.name} alarms`,
      masterKey: key,
      enforceSSL: true,
    });
    // CloudWatch alarms publish to the encrypted topic.
    key.grant(new iam.ServicePrincipal('cloudwatch.amazonaws.com'), 'kms:Decrypt', 'kms:GenerateDataKey*');
    if (stage.alarmEmail) {
      this.alarmTopic.addSubscription(new subscriptions.EmailSubscription(stage.alarmEmail));
    }

    const stream = messaging.stream;
    const iteratorAge = stream.metricGetRecordsIteratorAgeMilliseconds({ statistic: 'Maximum', period: Duration.minutes(1) });
    this.addAlarm('KinesisIteratorAge', {
      alarmName: `${stage.prefix}-kinesis-iterator-age`,
      alarmDescription: `Consumers of ${stage.prefix}-events are more than ${thresholds.iteratorAgeMs} ms behind the log (projector lag).`,
      metric: iteratorAge,
      threshold: thresholds.iteratorAgeMs,
      evaluationPeriods: 5,
      comparisonOperator: cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
      treatMissingData: cloudwatch.TreatMissingData.NOT_BREACHING,
    });

    for (const { name, queue } of messaging.deadLetterQueues()) {
      this.addAlarm(`${name[0].toUpperCase()}${name.slice(1)}DlqDepth`, {
        alarmName: `${stage.prefix}-${name}-dlq-depth`,
        alarmDescription: `Messages in the ${name} dead-letter queue: inspect the reason, fix, then redrive.`,
        metric: queue.metricApproximateNumberOfMessagesVisible({ statistic: 'Maximum', period: Duration.minutes(1) }),
        threshold: 0,
        evaluationPeriods: 1,
        comparisonOperator: cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
        treatMissingData: cloudwatch.TreatMissingData.NOT_BREACHING,
      });
    }

    // Each consuming service's own lag (the stream-wide iterator age above is the slowest reader of
    // all): the projectors, and the flows' saga and notifications consumer groups.
    const consumerLag = SERVICE_NAMES.filter((name) =>
      SERVICES[name].publishedMetrics?.some((m) => m.cloudWatchName === CONSUMER_LAG_METRIC),
    ).map((name) => ({ name, metric: publishedMetric(stage, name, CONSUMER_LAG_METRIC) }));
    for (const { name, metric } of consumerLag) {
      this.addAlarm(`${pascal(name)}ConsumerLag`, {
        alarmName: `${stage.prefix}-${name}-consumer-lag`,
        alarmDescription:
          `The ${name} consumer groups are more than ${thresholds.iteratorAgeMs} ms behind the log. ` +
          'No data counts as breaching: the service (or its metrics sidecar) is down.',
        metric,
        threshold: thresholds.iteratorAgeMs,
        evaluationPeriods: 5,
        comparisonOperator: cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
        treatMissingData: cloudwatch.TreatMissingData.BREACHING,
      });
    }

    const outboxBacklog = publishedMetric(stage, 'relay', 'OutboxBacklog');
    this.addAlarm('OutboxBacklog', {
      alarmName: `${stage.prefix}-outbox-backlog`,
      alarmDescription:
        'Committed events not yet published to Kinesis. No data counts as breaching: it means the relay (or its metrics sidecar) is down.',
      metric: outboxBacklog,
      threshold: thresholds.outboxBacklog,
      evaluationPeriods: 5,
      comparisonOperator: cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
      treatMissingData: cloudwatch.TreatMissingData.BREACHING,
    });

    const commandErrors = publishedMetric(stage, 'command-api', 'CommandErrors', Duration.minutes(5));
    this.addAlarm('CommandErrors', {
      alarmName: `${stage.prefix}-command-errors`,
      alarmDescription: 'Commands failing with server-side errors (INTERNAL / UNAVAILABLE) at the command API.',
      metric: commandErrors,
      threshold: thresholds.commandErrorsPer5Min,
      evaluationPeriods: 1,
      comparisonOperator: cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
      treatMissingData: cloudwatch.TreatMissingData.NOT_BREACHING,
    });

    const lb = services.loadBalancer;
    const elb5xx = lb.metrics.httpCodeElb(elbv2.HttpCodeElb.ELB_5XX_COUNT, { period: Duration.minutes(5), statistic: 'Sum' });
    this.addAlarm('LoadBalancer5xx', {
      alarmName: `${stage.prefix}-lb-5xx`,
      alarmDescription: 'The internal load balancer answers 5xx (no healthy command API / dashboard targets, timeouts).',
      metric: elb5xx,
      threshold: thresholds.loadBalancer5xxPer5Min,
      evaluationPeriods: 1,
      comparisonOperator: cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
      treatMissingData: cloudwatch.TreatMissingData.NOT_BREACHING,
    });
    const target5xx = lb.metrics.httpCodeTarget(elbv2.HttpCodeTarget.TARGET_5XX_COUNT, { period: Duration.minutes(5), statistic: 'Sum' });
    this.addAlarm('Target5xx', {
      alarmName: `${stage.prefix}-target-5xx`,
      alarmDescription: 'Command API or dashboard tasks answer HTTP 5xx.',
      metric: target5xx,
      threshold: thresholds.loadBalancer5xxPer5Min,
      evaluationPeriods: 1,
      comparisonOperator: cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
      treatMissingData: cloudwatch.TreatMissingData.NOT_BREACHING,
    });
    const healthyApiHosts = services.grpcTargetGroup.metrics.healthyHostCount({ period: Duration.minutes(1), statistic: 'Minimum' });
    this.addAlarm('CommandApiHealthyHosts', {
      alarmName: `${stage.prefix}-command-api-healthy-hosts`,
      alarmDescription: 'No command API task passes the gRPC health check.',
      metric: healthyApiHosts,
      threshold: 1,
      evaluationPeriods: 3,
      comparisonOperator: cloudwatch.ComparisonOperator.LESS_THAN_THRESHOLD,
      treatMissingData: cloudwatch.TreatMissingData.BREACHING,
    });

    const healthyDashboardHosts = services.dashboardTargetGroup.metrics.healthyHostCount({ period: Duration.minutes(1), statistic: 'Minimum' });
    this.addAlarm('DashboardHealthyHosts', {
      alarmName: `${stage.prefix}-dashboard-healthy-hosts`,
      alarmDescription: 'No barista dashboard task passes the /health check (DynamoDB view or history database unreachable).',
      metric: healthyDashboardHosts,
      threshold: 1,
      evaluationPeriods: 3,
      comparisonOperator: cloudwatch.ComparisonOperator.LESS_THAN_THRESHOLD,
      treatMissingData: cloudwatch.TreatMissingData.BREACHING,
    });

    // The active-orders view's tables change names when replay swaps a rebuild in, so these
    // alarms name no table: a Metrics Insights query selects the tables by the view's tag,
    // which replay copies onto the rebuilt tables (the retired ones keep it too, but carry no
    // traffic). CfnAlarm: the L2 Alarm's math expression validation does not know SELECT.
    const viewAlarms: cloudwatch.IAlarm[] = [];
    for (const [id, metricName, what] of [
      ['ActiveOrdersThrottles', 'ThrottledRequests', 'throttled requests'],
      ['ActiveOrdersSystemErrors', 'SystemErrors', 'DynamoDB server errors'],
    ] as const) {
      const name = `${stage.prefix}-active-orders-${metricName === 'SystemErrors' ? 'system-errors' : 'throttles'}`;
      const alarm = new cloudwatch.CfnAlarm(this, id, {
        alarmName: name,
        alarmDescription:
          `${what} on the tables of the live active-orders view (selected by tag ` +
          `${ACTIVE_ORDERS_VIEW_TAG.key}=${ACTIVE_ORDERS_VIEW_TAG.value}, so the alarm follows a replay swap).`,
        metrics: [
          {
            id: 'view',
            expression: activeOrdersViewQuery(metricName),
            period: 300,
            returnData: true,
            label: `active-orders ${what}`,
          },
        ],
        comparisonOperator: 'GreaterThanThreshold',
        threshold: 0,
        evaluationPeriods: 1,
        treatMissingData: 'notBreaching',
        alarmActions: [this.alarmTopic.topicArn],
        okActions: [this.alarmTopic.topicArn],
      });
      viewAlarms.push(cloudwatch.Alarm.fromAlarmArn(this, `${id}Ref`, alarm.attrArn));
    }

    const ecsMetric = (metricName: string, service: string) =>
      new cloudwatch.Metric({
        namespace: 'AWS/ECS',
        metricName,
        dimensionsMap: { ClusterName: services.cluster.clusterName, ServiceName: `${stage.prefix}-${service}` },
        statistic: 'Average',
        period: Duration.minutes(1),
        label: service,
      });

    this.dashboard = new cloudwatch.Dashboard(this, 'Dashboard', {
      dashboardName: `${stage.prefix}-pipeline`,
      defaultInterval: Duration.hours(3),
    });
    this.dashboard.addWidgets(
      new cloudwatch.AlarmStatusWidget({ title: 'Alarms', alarms: [...this.alarms, ...viewAlarms], width: 24, height: 4 }),
    );
    this.dashboard.addWidgets(
      new cloudwatch.GraphWidget({
        title: 'Commands: requests and errors',
        left: [lb.metrics.requestCount({ period: Duration.minutes(1), statistic: 'Sum', label: 'LB requests' })],
        right: [commandErrors, elb5xx, target5xx],
        width: 8,
      }),
      new cloudwatch.GraphWidget({
        title: 'Command API latency (LB target response time)',
        left: [
          lb.metrics.targetResponseTime({ statistic: 'p50', period: Duration.minutes(1), label: 'p50' }),
          lb.metrics.targetResponseTime({ statistic: 'p99', period: Duration.minutes(1), label: 'p99' }),
        ],
        width: 8,
      }),
      new cloudwatch.GraphWidget({
        title: 'Outbox backlog (relay)',
        left: [outboxBacklog],
        leftAnnotations: [{ value: thresholds.outboxBacklog, label: 'alarm' }],
        width: 8,
      }),
    );
    this.dashboard.addWidgets(
      new cloudwatch.GraphWidget({
        title: 'Event log: records in / iterator age',
        left: [stream.metricIncomingRecords({ statistic: 'Sum', period: Duration.minutes(1) })],
        right: [iteratorAge],
        rightAnnotations: [{ value: thresholds.iteratorAgeMs, label: 'alarm' }],
        width: 8,
      }),
      new cloudwatch.GraphWidget({
        title: 'Consumer lag per service (projectors, flows-log)',
        left: consumerLag.map(({ name, metric }) => metric.with({ label: name })),
        leftAnnotations: [{ value: thresholds.iteratorAgeMs, label: 'alarm' }],
        width: 8,
      }),
    );
    this.dashboard.addWidgets(
      new cloudwatch.GraphWidget({
        title: 'Work queues (flows-payments, flows-intake, notifications): visible / oldest age',
        left: [messaging.intake, messaging.payments, messaging.notifications].map((p) =>
          p.queue.metricApproximateNumberOfMessagesVisible({ statistic: 'Maximum', period: Duration.minutes(1) }),
        ),
        right: [messaging.intake, messaging.payments, messaging.notifications].map((p) =>
          p.queue.metricApproximateAgeOfOldestMessage({ statistic: 'Maximum', period: Duration.minutes(1) }),
        ),
        width: 8,
      }),
      new cloudwatch.GraphWidget({
        title: 'Healthy load balancer targets: command API, dashboard',
        left: [
          services.grpcTargetGroup.metrics.healthyHostCount({ period: Duration.minutes(1), statistic: 'Minimum', label: 'command-api' }),
          healthyDashboardHosts.with({ label: 'dashboard' }),
        ],
        width: 8,
      }),
      new cloudwatch.GraphWidget({
        title: 'Dead-letter queues',
        left: messaging
          .deadLetterQueues()
          .map(({ name, queue }) =>
            queue.metricApproximateNumberOfMessagesVisible({ statistic: 'Maximum', period: Duration.minutes(1), label: name }),
          ),
        width: 8,
      }),
    );
    this.dashboard.addWidgets(
      new cloudwatch.GraphWidget({
        title: 'ECS CPU utilisation',
        left: SERVICE_NAMES.map((s) => ecsMetric('CPUUtilization', s)),
        width: 8,
      }),
      new cloudwatch.GraphWidget({
        title: 'ECS memory utilisation',
        left: SERVICE_NAMES.map((s) => ecsMetric('MemoryUtilization', s)),
        width: 8,
      }),
      new cloudwatch.GraphWidget({
        title: 'Aurora: capacity (ACU) and connections',
        left: [data.aurora.metricServerlessDatabaseCapacity({ period: Duration.minutes(1), statistic: 'Maximum' })],
        right: [data.aurora.metricDatabaseConnections({ period: Duration.minutes(1), statistic: 'Maximum' })],
        width: 8,
      }),
    );
    this.dashboard.addWidgets(
      new cloudwatch.GraphWidget({
        title: 'DynamoDB throttled requests',
        left: data.tables().map((table, i) =>
          new cloudwatch.MathExpression({
            expression: `r${i} + w${i}`,
            usingMetrics: {
              [`r${i}`]: table.metric('ReadThrottleEvents', { statistic: 'Sum', period: Duration.minutes(1) }),
              [`w${i}`]: table.metric('WriteThrottleEvents', { statistic: 'Sum', period: Duration.minutes(1) }),
            },
            label: table.node.id,
            period: Duration.minutes(1),
          }),
        ),
        width: 12,
      }),
      new cloudwatch.GraphWidget({
        title: 'DynamoDB consumed capacity',
        left: data.tables().map((table) =>
          table.metricConsumedWriteCapacityUnits({ statistic: 'Sum', period: Duration.minutes(1), label: `${table.node.id} WCU` }),
        ),
        right: data.tables().map((table) =>
          table.metricConsumedReadCapacityUnits({ statistic: 'Sum', period: Duration.minutes(1), label: `${table.node.id} RCU` }),
        ),
        width: 12,
      }),
    );
  }

  private addAlarm(id: string, props: cloudwatch.AlarmProps & { metric: cloudwatch.IMetric }) {
    const alarm = new cloudwatch.Alarm(this, id, props);
    alarm.addAlarmAction(new cwActions.SnsAction(this.alarmTopic));
    alarm.addOkAction(new cwActions.SnsAction(this.alarmTopic));
    this.alarms.push(alarm);
    return alarm;
  }
}

/** A Metrics Insights query summing `metricName` over every table tagged as the live active-orders view. */
export function activeOrdersViewQuery(metricName: string): string {
  return (
    `SELECT SUM(${metricName}) FROM SCHEMA("AWS/DynamoDB", TableName, Operation) ` +
    `WHERE tag.${ACTIVE_ORDERS_VIEW_TAG.key} = '${ACTIVE_ORDERS_VIEW_TAG.value}'`
  );
}

/** The projector runtime's lag gauge as published by `projectors` and `flows-log`. */
const CONSUMER_LAG_METRIC = 'ConsumerLagMillis';

const pascal = (name: string) => name.split('-').map((part) => part[0].toUpperCase() + part.slice(1)).join('');

/** A metric a service's collector sidecar publishes (`SERVICES[service].publishedMetrics`). */
function publishedMetric(stage: StageConfig, service: ServiceName, metricName: string, period = Duration.minutes(1)) {
  const published = SERVICES[service].publishedMetrics?.find((m) => m.cloudWatchName === metricName);
  if (!published) throw new Error(`${service} publishes no ${metricName}`);
  return new cloudwatch.Metric({
    namespace: METRICS_NAMESPACE,
    metricName,
    dimensionsMap: { Stage: stage.name, Service: service },
    statistic: published.statistic,
    period,
  });
}
