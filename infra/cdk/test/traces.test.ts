import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import { logicalId, synthStage } from './helpers';
import { PROCESS_NAMES, ProcessName, SERVICES } from '../lib/config';

const COLLECTOR = 'http://otel-collector.orderpipe.internal:4317';
const pascal = (name: string) => name.split('-').map((p) => p[0].toUpperCase() + p.slice(1)).join('');

/** `ORDERPIPE_LOG__OTLP_ENDPOINT` of each process's container in a synthesised stage. */
function endpoints(context: Record<string, unknown>): Map<ProcessName, string | undefined> {
  const { template } = synthStage('dev', { context });
  const resources = template.toJSON().Resources as Record<string, any>;
  const found = new Map<ProcessName, string | undefined>();
  for (const name of PROCESS_NAMES) {
    const task = resources[logicalId(template, 'AWS::ECS::TaskDefinition', `Services${pascal(name)}Task`)].Properties;
    const container = task.ContainerDefinitions.find((c: any) => c.Name === name);
    found.set(name, (container.Environment ?? []).find((e: any) => e.Name === 'ORDERPIPE_LOG__OTLP_ENDPOINT')?.Value);
  }
  return found;
}

test('without a collector no process is given a trace endpoint (traces stay off)', () => {
  for (const [name, endpoint] of endpoints({})) assert.equal(endpoint, undefined, name);
});

test('with the otlpEndpoint context every long-running process sends its traces there', () => {
  for (const [name, endpoint] of endpoints({ otlpEndpoint: COLLECTOR })) {
    const traced = SERVICES[name].capabilities.includes('structuredLogs');
    assert.equal(endpoint, traced ? COLLECTOR : undefined, name);
  }
});
