import { CfnOutput, Stack, StackProps } from 'aws-cdk-lib';
import * as ec2 from 'aws-cdk-lib/aws-ec2';
import * as kms from 'aws-cdk-lib/aws-kms';
import { Construct } from 'constructs';
import { DataStores } from './data-stores';
import { Messaging } from './messaging';
import { Network } from './network';
import { Observability } from './observability';
import { Services } from './services';
import { retainOrDestroy, StageConfig } from './stage';

export interface OrderpipeStackProps extends StackProps {
  readonly stage: StageConfig;
}

/** The whole deployment of one stage: network, data stores, messaging, services, observability. */
export class OrderpipeStack extends Stack {
  readonly stage: StageConfig;
  readonly network: Network;
  readonly data: DataStores;
  readonly messaging: Messaging;
  readonly services: Services;
  readonly observability: Observability;

  constructor(scope: Construct, id: string, props: OrderpipeStackProps) {
    super(scope, id, props);
    const { stage } = props;
    this.stage = stage;

    // One customer-managed key for the pipeline's data at rest: stream, queues, tables, Aurora, Redshift, alarm topic.
    const key = new kms.Key(this, 'DataKey', {
      alias: `alias/${stage.prefix}-data`,
      description: `orderpipe ${stage.name}: data at rest`,
      enableKeyRotation: true,
      removalPolicy: retainOrDestroy(stage),
    });

    this.network = new Network(this, 'Network', { stage });
    this.data = new DataStores(this, 'Data', { stage, vpc: this.network.vpc, key });
    this.messaging = new Messaging(this, 'Messaging', { stage, key });
    this.services = new Services(this, 'Services', {
      stage,
      vpc: this.network.vpc,
      data: this.data,
      messaging: this.messaging,
    });
    this.observability = new Observability(this, 'Observability', {
      stage,
      key,
      data: this.data,
      messaging: this.messaging,
      services: this.services,
    });

    new CfnOutput(this, 'CommandApiUrl', { value: `https://${this.services.apiDomainName}` });
    new CfnOutput(this, 'DashboardUrl', { value: `https://${this.services.dashboardDomainName}` });
    new CfnOutput(this, 'EventStreamName', { value: this.messaging.stream.streamName });
    new CfnOutput(this, 'AuroraSecretArn', { value: this.data.auroraSecret.secretArn });
    new CfnOutput(this, 'AlarmTopicArn', { value: this.observability.alarmTopic.topicArn });
    // What `aws ecs run-task` needs to start replay (DEPLOYING.md, "Replay").
    new CfnOutput(this, 'ClusterName', { value: this.services.cluster.clusterName });
    new CfnOutput(this, 'ReplayTaskDefinitionFamily', { value: this.services.replay.taskDefinition.family });
    new CfnOutput(this, 'ReplaySecurityGroupId', { value: this.services.replay.securityGroup.securityGroupId });
    new CfnOutput(this, 'AppSubnetIds', {
      value: this.network.vpc.selectSubnets({ subnetType: ec2.SubnetType.PRIVATE_WITH_EGRESS }).subnetIds.join(','),
    });
  }

  /** The stage's zones, so synth needs no AZ lookup (and so no AWS credentials). */
  override get availabilityZones(): string[] {
    return this.stage.availabilityZones;
  }
}
