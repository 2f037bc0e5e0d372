import { Duration } from 'aws-cdk-lib';
import * as kinesis from 'aws-cdk-lib/aws-kinesis';
import * as kms from 'aws-cdk-lib/aws-kms';
import * as sqs from 'aws-cdk-lib/aws-sqs';
import { NagSuppressions } from 'cdk-nag';
import { Construct } from 'constructs';
import { retainOrDestroy, StageConfig } from './stage';

/** Times a message is received before it moves to its dead-letter queue. */
export const MAX_RECEIVE_COUNT = 5;

export interface MessagingProps {
  readonly stage: StageConfig;
  readonly key: kms.IKey;
}

/** A work queue and its dead-letter queue. */
export interface QueuePair {
  readonly queue: sqs.Queue;
  readonly dlq: sqs.Queue;
}

/**
 * The event log (Kinesis, on-demand, KMS) and the SQS work queues: intake, payments (FIFO, one
 * message group per order), notifications and purchase orders (FIFO, one message group per store),
 * each with a dead-letter queue, plus the queue the
 * projectors move malformed log records to.
 */
export class Messaging extends Construct {
  readonly stream: kinesis.Stream;
  readonly intake: QueuePair;
  readonly payments: QueuePair;
  readonly notifications: QueuePair;
  /** Purchase orders for the supplier integration (FIFO, one message group per store). */
  readonly purchaseOrders: QueuePair;
  readonly projectorDlq: sqs.Queue;

  constructor(scope: Construct, id: string, props: MessagingProps) {
    super(scope, id);
    const { stage, key } = props;

    this.stream = new kinesis.Stream(this, 'EventStream', {
      streamName: `${stage.prefix}-events`,
      streamMode: kinesis.StreamMode.ON_DEMAND,
      // KMS with the AWS managed key: a customer key would add a KMS call per producer and consumer
      // data key for no control the stream needs (cdk-nag KDS3).
      encryption: kinesis.StreamEncryption.MANAGED,
      retentionPeriod: Duration.hours(stage.kinesisRetentionHours),
      removalPolicy: retainOrDestroy(stage),
    });

    const queueDefaults = {
      encryption: sqs.QueueEncryption.KMS,
      encryptionMasterKey: key,
      dataKeyReuse: Duration.minutes(5),
      enforceSSL: true,
      removalPolicy: retainOrDestroy(stage),
    };
    const pair = (id: string, name: string, options: { fifo?: boolean; visibilityTimeout: Duration }): QueuePair => {
      const suffix = options.fifo ? '.fifo' : '';
      const dlq = new sqs.Queue(this, `${id}Dlq`, {
        ...queueDefaults,
        queueName: `${stage.prefix}-${name}-dlq${suffix}`,
        fifo: options.fifo,
        retentionPeriod: Duration.days(14),
      });
      const queue = new sqs.Queue(this, id, {
        ...queueDefaults,
        queueName: `${stage.prefix}-${name}${suffix}`,
        fifo: options.fifo,
        visibilityTimeout: options.visibilityTimeout,
        retentionPeriod: Duration.days(4),
        deadLetterQueue: { queue: dlq, maxReceiveCount: MAX_RECEIVE_COUNT },
        ...(options.fifo
          ? {
              // Producers may set a deduplication id (the command's idempotency key); without one the body is the id.
              contentBasedDeduplication: true,
              // High-throughput FIFO: ordering and deduplication per order (message group), not per queue.
              deduplicationScope: sqs.DeduplicationScope.MESSAGE_GROUP,
              fifoThroughputLimit: sqs.FifoThroughputLimit.PER_MESSAGE_GROUP_ID,
            }
          : {}),
      });
      return { queue, dlq };
    };

    this.intake = pair('Intake', 'intake', { visibilityTimeout: Duration.seconds(60) });
    this.payments = pair('Payments', 'payments', { fifo: true, visibilityTimeout: Duration.seconds(120) });
    this.notifications = pair('Notifications', 'notifications', { visibilityTimeout: Duration.seconds(60) });
    this.purchaseOrders = pair('PurchaseOrders', 'purchase-orders', { fifo: true, visibilityTimeout: Duration.seconds(60) });

    this.projectorDlq = new sqs.Queue(this, 'ProjectorDlq', {
      ...queueDefaults,
      queueName: `${stage.prefix}-projector-dlq`,
      retentionPeriod: Duration.days(14),
    });
    NagSuppressions.addResourceSuppressions(this.projectorDlq, [
      {
        id: 'AwsSolutions-SQS3',
        reason:
          'This queue is itself a dead-letter queue: the projectors send it malformed Kinesis records with the ' +
          'reason attached. No SQS redrive policy points at it because its source is a stream, not a queue.',
      },
    ]);
  }

  /** Every dead-letter queue, with a short name for alarms and dashboards. */
  deadLetterQueues(): Array<{ name: string; queue: sqs.Queue }> {
    return [
      { name: 'intake', queue: this.intake.dlq },
      { name: 'payments', queue: this.payments.dlq },
      { name: 'notifications', queue: this.notifications.dlq },
      { name: 'purchase_orders', queue: this.purchaseOrders.dlq },
      { name: 'projector', queue: this.projectorDlq },
    ];
  }
}
