import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import { Match } from 'aws-cdk-lib/assertions';
import { INTERFACE_ENDPOINTS } from '../lib/network';
import { synthStage } from './helpers';

const { template, stage } = synthStage('dev');

test('VPC uses the stage CIDR across three zones with public, private and isolated subnets', () => {
  template.hasResourceProperties('AWS::EC2::VPC', { CidrBlock: stage.vpcCidr });
  template.resourceCountIs('AWS::EC2::Subnet', 9);
  const zones = new Set(Object.values(template.findResources('AWS::EC2::Subnet')).map((s) => s.Properties.AvailabilityZone));
  assert.deepEqual([...zones].sort(), ['us-east-1a', 'us-east-1b', 'us-east-1c']);
  const publicSubnets = template.findResources('AWS::EC2::Subnet', { Properties: { MapPublicIpOnLaunch: true } });
  assert.equal(Object.keys(publicSubnets).length, 3);
});

test('dev runs one NAT gateway (prod context asks for one per zone)', () => {
  template.resourceCountIs('AWS::EC2::NatGateway', stage.natGateways);
  assert.equal(stage.natGateways, 1);
});

test('VPC flow logs capture all traffic', () => {
  template.hasResourceProperties('AWS::EC2::FlowLog', { TrafficType: 'ALL', LogDestinationType: 'cloud-watch-logs' });
});

test('gateway endpoints for S3 and DynamoDB', () => {
  for (const service of ['s3', 'dynamodb']) {
    template.hasResourceProperties('AWS::EC2::VPCEndpoint', {
      VpcEndpointType: 'Gateway',
      ServiceName: Match.objectLike({ 'Fn::Join': ['', Match.arrayWith([`.${service}`])] }),
    });
  }
});

test('interface endpoints for every AWS API the tasks call, private DNS, HTTPS from the VPC only', () => {
  const endpoints = Object.values(template.findResources('AWS::EC2::VPCEndpoint', { Properties: { VpcEndpointType: 'Interface' } }));
  assert.equal(endpoints.length, Object.keys(INTERFACE_ENDPOINTS).length);
  const names = endpoints.map((e) => e.Properties.ServiceName).sort();
  assert.deepEqual(names, [
    'com.amazonaws.us-east-1.ecr.api',
    'com.amazonaws.us-east-1.ecr.dkr',
    'com.amazonaws.us-east-1.kinesis-streams',
    'com.amazonaws.us-east-1.kms',
    'com.amazonaws.us-east-1.logs',
    'com.amazonaws.us-east-1.secretsmanager',
    'com.amazonaws.us-east-1.sqs',
  ]);
  for (const e of endpoints) assert.equal(e.Properties.PrivateDnsEnabled, true);
  const endpointGroups = template.findResources('AWS::EC2::SecurityGroup', {
    Properties: { GroupDescription: Match.stringLikeRegexp('Network/Vpc/') },
  });
  assert.equal(Object.keys(endpointGroups).length, endpoints.length);
  for (const group of Object.values(endpointGroups)) {
    assert.deepEqual(
      group.Properties.SecurityGroupIngress.map((r: any) => [r.CidrIp, r.FromPort, r.ToPort]),
      [[stage.vpcCidr, 443, 443]],
    );
  }
});

test('no security group admits the internet', () => {
  for (const group of Object.values(template.findResources('AWS::EC2::SecurityGroup'))) {
    for (const rule of group.Properties.SecurityGroupIngress ?? []) {
      assert.notEqual(rule.CidrIp, '0.0.0.0/0', `${group.Properties.GroupDescription} is open to the internet`);
    }
  }
});
