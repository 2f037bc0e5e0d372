import { Validations } from 'aws-cdk-lib';
import * as ec2 from 'aws-cdk-lib/aws-ec2';
import * as logs from 'aws-cdk-lib/aws-logs';
import { Construct } from 'constructs';
import { logRetention, retainOrDestroy, StageConfig } from './stage';

/** Interface endpoints the tasks reach AWS through without leaving the VPC. */
export const INTERFACE_ENDPOINTS: Record<string, ec2.InterfaceVpcEndpointAwsService> = {
  EcrApi: ec2.InterfaceVpcEndpointAwsService.ECR,
  EcrDocker: ec2.InterfaceVpcEndpointAwsService.ECR_DOCKER,
  Logs: ec2.InterfaceVpcEndpointAwsService.CLOUDWATCH_LOGS,
  SecretsManager: ec2.InterfaceVpcEndpointAwsService.SECRETS_MANAGER,
  Kinesis: ec2.InterfaceVpcEndpointAwsService.KINESIS_STREAMS,
  Sqs: ec2.InterfaceVpcEndpointAwsService.SQS,
  Kms: ec2.InterfaceVpcEndpointAwsService.KMS,
};

export interface NetworkProps {
  readonly stage: StageConfig;
}

/**
 * The VPC: public subnets only for the NAT gateways, private subnets for the tasks and the internal
 * load balancer, isolated subnets for Aurora and Redshift. Gateway endpoints for S3 (ECR layers)
 * and DynamoDB, interface endpoints for the other AWS APIs the services call; NAT remains for the
 * collector image on public ECR and for the payment gateway.
 */
export class Network extends Construct {
  readonly vpc: ec2.Vpc;

  constructor(scope: Construct, id: string, props: NetworkProps) {
    super(scope, id);
    const { stage } = props;

    const flowLogGroup = new logs.LogGroup(this, 'FlowLogs', {
      logGroupName: `/${stage.prefix}/vpc-flow-logs`,
      retention: logRetention(stage),
      removalPolicy: retainOrDestroy(stage),
    });

    this.vpc = new ec2.Vpc(this, 'Vpc', {
      vpcName: stage.prefix,
      ipAddresses: ec2.IpAddresses.cidr(stage.vpcCidr),
      availabilityZones: stage.availabilityZones,
      natGateways: stage.natGateways,
      // The default security group is unused; restricting it needs a custom-resource Lambda.
      restrictDefaultSecurityGroup: false,
      subnetConfiguration: [
        { name: 'public', subnetType: ec2.SubnetType.PUBLIC, cidrMask: 24 },
        { name: 'app', subnetType: ec2.SubnetType.PRIVATE_WITH_EGRESS, cidrMask: 20 },
        { name: 'data', subnetType: ec2.SubnetType.PRIVATE_ISOLATED, cidrMask: 24 },
      ],
      gatewayEndpoints: {
        S3: { service: ec2.GatewayVpcEndpointAwsService.S3 },
        DynamoDb: { service: ec2.GatewayVpcEndpointAwsService.DYNAMODB },
      },
      flowLogs: {
        all: {
          destination: ec2.FlowLogDestination.toCloudWatchLogs(flowLogGroup),
          trafficType: ec2.FlowLogTrafficType.ALL,
        },
      },
    });

    Validations.of(this.vpc).acknowledge({
      id: 'CloudFormation-Validate::W3010',
      reason:
        'Zones are named on purpose (stage context `availabilityZones`, default <region>a-c): Redshift Serverless ' +
        'needs three, and naming them keeps synth free of AWS lookups.',
    });

    for (const [name, service] of Object.entries(INTERFACE_ENDPOINTS)) {
      const endpoint = this.vpc.addInterfaceEndpoint(name, {
        service,
        subnets: { subnetType: ec2.SubnetType.PRIVATE_WITH_EGRESS },
        privateDnsEnabled: true,
        open: false,
      });
      // HTTPS from inside the VPC only (the literal CIDR, so the rule is checkable at synth time).
      endpoint.connections.allowFrom(ec2.Peer.ipv4(stage.vpcCidr), ec2.Port.tcp(443), `HTTPS to ${name} from the VPC`);
    }
  }
}
