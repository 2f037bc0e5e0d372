import { Duration } from 'aws-cdk-lib';
import * as kinesis from 'aws-cdk-lib/aws-kinesis';
import * as kms from 'aws-cdk-lib/aws-kms';
import * as sqs from 'aws-cdk-lib/aws-sqs';
import { NagSuppressions } from 'cdk-nag';
import { Construct } from 'constructs';
import { constructId, RESOURCES, streamDeclaration } from './resources';
import { retainOrDestroy, StageConfig } from './stage';

/**
 * How long a received message stays invisible unless the consumer says otherwise (the flows
 * set their own per receive): a deployment choice, so it lives here, not in the declarations.
 * Payments get longer: a gateway call may take up to its 60-second timeout.
 */
const DEFAULT_VISIBILITY_TIMEOUT = Duration.seconds(60);
const VISIBILITY_TIMEOUTS: Record<string, Duration> = { payments: Duration.seconds(120) };

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
 * message group per order), notifications and purchase orders (FIFO, one group per store), each
 * with a dead-letter queue, plus the queue the projectors move malformed log records to.
 */
export class Messaging extends Construct {
  readonly stream: kinesis.Stream;
  readonly intake: QueuePair;
  readonly payments: QueuePair;
  readonly notifications: QueuePair;
  /** Purchase orders for the supplier integration (FIFO, one message group per store). */
  readonly purchaseOrders: QueuePair;
  readonly projectorDlq: sqs.Queue;

  private readonly pairs = new Map<string, QueuePair>();
  private readonly deadLetters = new Map<string, sqs.Queue>();

  constructor(scope: Construct, id: string, props: MessagingProps) {
    super(scope, id);
    const { stage, key } = props;

    this.stream = new kinesis.Stream(this, 'EventStream', {
      streamName: `${stage.prefix}-${streamDeclaration('events').name}`,
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
    // Every queue the code declares (resources.json): its name, FIFO or not, and its redrive to
    // the dead-letter queue after the declared number of receives.
    for (const declaration of RESOURCES.queues) {
      const id = constructId(declaration.name);
      const fifo = declaration.fifo ? true : undefined;
      const dlq = new sqs.Queue(this, `${id}Dlq`, {
        ...queueDefaults,
        queueName: `${stage.prefix}-${declaration.dead_letter_name}`,
        fifo,
        retentionPeriod: Duration.days(14),
      });
      this.deadLetters.set(declaration.name, dlq);
      if (declaration.queue_name === null || declaration.max_receive_count === null) {
        NagSuppressions.addResourceSuppressions(dlq, [
          {
            id: 'AwsSolutions-SQS3',
            reason:
              'This queue is itself a dead-letter queue: the projectors send it malformed Kinesis records with the ' +
              'reason attached. No SQS redrive policy points at it because its source is a stream, not a queue.',
          },
        ]);
        continue;
      }
      const queue = new sqs.Queue(this, id, {
        ...queueDefaults,
        queueName: `${stage.prefix}-${declaration.queue_name}`,
        fifo,
        visibilityTimeout: VISIBILITY_TIMEOUTS[declaration.name] ?? DEFAULT_VISIBILITY_TIMEOUT,
        retentionPeriod: Duration.days(4),
        deadLetterQueue: { queue: dlq, maxReceiveCount: declaration.max_receive_count },
        ...(declaration.fifo
          ? {
              // Producers may set a deduplication id (the command's idempotency key); without one the body is the id.
              contentBasedDeduplication: true,
              // High-throughput FIFO: ordering and deduplication per order (message group), not per queue.
              deduplicationScope: sqs.DeduplicationScope.MESSAGE_GROUP,
              fifoThroughputLimit: sqs.FifoThroughputLimit.PER_MESSAGE_GROUP_ID,
            }
          : {}),
      });
      this.pairs.set(declaration.name, { queue, dlq });
    }
    this.intake = this.pair('intake');
    this.payments = this.pair('payments');
    this.notifications = this.pair('notifications');
    this.purchaseOrders = this.pair('purchase-orders');
    const projectorDlq = this.deadLetters.get('projector');
    if (!projectorDlq) throw new Error('resources.json declares no queue named projector (regenerate it from the Rust code)');
    this.projectorDlq = projectorDlq;
  }

  /** The work queue the code declares as `name`, with its dead-letter queue. */
  private pair(name: string): QueuePair {
    const pair = this.pairs.get(name);
    if (!pair) throw new Error(`resources.json declares no work queue named ${name} (regenerate it from the Rust code)`);
    return pair;
  }

  /** Every dead-letter queue, with a short name (the declared one) for alarms and dashboards. */
  deadLetterQueues(): Array<{ name: string; queue: sqs.Queue }> {
    return [...this.deadLetters].map(([name, queue]) => ({ name, queue }));
  }
}
