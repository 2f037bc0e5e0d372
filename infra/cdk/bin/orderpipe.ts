#!/usr/bin/env node
import { buildApp } from '../lib/app';

// Stage and overrides come from context: `cdk synth -c stage=prod -c imageTag=<git sha>`.
// cdk-nag's AwsSolutions checks run on every synth; an unsuppressed finding fails it.
buildApp().app.synth();
