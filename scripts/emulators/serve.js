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
  answerTimestampsPastTheLastRecord();
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

// kinesalite 3.3.3 answers GetShardIterator AT_TIMESTAMP by scanning the shard for the first
// record at or after the timestamp, and never answers at all when there is none (a shard whose
// records all came before the moment, or an empty one): the call hangs until the client's
// timeout. AWS returns an iterator at the shard's tip then, as LATEST does. Installed before
// kinesalite loads its actions, so its own GetShardIterator sees the request rewritten to LATEST
// only in that case; every other request, and the validation of this one, stays kinesalite's.
function answerTimestampsPastTheLastRecord() {
  const actionPath = require.resolve('kinesalite/actions/getShardIterator');
  const db = require('kinesalite/db');
  const getShardIterator = require(actionPath);
  require.cache[actionPath].exports = function getShardIteratorAtTimestamp(store, data, cb) {
    if (data.ShardIteratorType !== 'AT_TIMESTAMP' || data.Timestamp == null ||
        data.Timestamp * 1000 > Date.now()) {
      return getShardIterator(store, data, cb);
    }
    let shardIx;
    try {
      shardIx = db.resolveShardId(data.ShardId).shardIx;
    } catch (e) {
      return getShardIterator(store, data, cb);
    }
    const range = { gt: db.shardIxToHex(shardIx), lt: db.shardIxToHex(shardIx + 1) };
    let found = false;
    const scan = store.getStreamDb(data.StreamName).createReadStream(range);
    scan.on('data', (item) => {
      if (!found && item.value.ApproximateArrivalTimestamp >= data.Timestamp) {
        found = true;
        scan.destroy();
        getShardIterator(store, data, cb);
      }
    });
    scan.on('error', (err) => {
      if (!found) {
        found = true;
        cb(err);
      }
    });
    scan.on('end', () => {
      if (!found) {
        found = true;
        const latest = { ...data, ShardIteratorType: 'LATEST' };
        delete latest.Timestamp;
        getShardIterator(store, latest, cb);
      }
    });
  };
}
