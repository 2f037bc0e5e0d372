#!/usr/bin/env node
// Starts kinesalite (Kinesis) or dynalite (DynamoDB) bound to 127.0.0.1 only.
// Their CLIs have no host flag and would listen on every interface.
//
//   node serve.js kinesis PORT [DATA_DIR]
//   node serve.js dynamodb PORT [DATA_DIR]
//
// Without DATA_DIR the emulator keeps its state in memory (fastest; state is
// lost on restart). With DATA_DIR it persists to LevelDB there.
'use strict';

const [kind, portArg, dataDir] = process.argv.slice(2);
const port = Number(portArg);
if (!['kinesis', 'dynamodb'].includes(kind) || !Number.isInteger(port) || port <= 0) {
  console.error('usage: serve.js kinesis|dynamodb PORT [DATA_DIR]');
  process.exit(2);
}

const common = dataDir ? { path: dataDir } : {};
let server;
if (kind === 'kinesis') {
  server = require('kinesalite')({
    ...common,
    createStreamMs: 0,
    deleteStreamMs: 0,
    updateStreamMs: 0,
    // Every test makes its own stream and not all of them delete it: a long-lived local stack
    // would hit AWS's default account limit (which kinesalite copies) after a few test runs.
    shardLimit: 100000,
  });
} else {
  server = require('dynalite')({
    ...common,
    createTableMs: 0,
    deleteTableMs: 0,
    updateTableMs: 0,
  });
}

server.on('error', (err) => {
  console.error(`${kind} emulator error: ${err.stack || err}`);
  process.exit(1);
});

server.listen(port, '127.0.0.1', () => {
  console.log(`${kind} emulator (${kind === 'kinesis' ? 'kinesalite' : 'dynalite'}) listening on http://127.0.0.1:${port}` +
    (dataDir ? ` data=${dataDir}` : ' (in memory)'));
});

function shutdown(signal) {
  console.log(`${kind} emulator: ${signal}, closing`);
  server.close(() => process.exit(0));
  // Drop idle keep-alive connections (SDK clients keep them) so close() returns now.
  if (typeof server.closeAllConnections === 'function') server.closeAllConnections();
  setTimeout(() => process.exit(0), 1000).unref();
}
process.on('SIGTERM', () => shutdown('SIGTERM'));
process.on('SIGINT', () => shutdown('SIGINT'));
