"use strict";
// What the server and the client processes share.
const { performance } = require("node:perf_hooks");

// The keys client `client` follows: the same spread as bench.fanout's keys_of (every key gets
// the same number of clients, give or take one).
function keysOf(client, keys, perClient) {
  const stride = Math.floor(keys / perClient);
  const out = [];
  for (let j = 0; j < perClient; j++) out.push((client + j * stride) % keys);
  return out;
}

// Wall-clock time in ms, with sub-ms resolution (the same clock in every process of the machine).
function nowMs() {
  return performance.timeOrigin + performance.now();
}

// One JSON line to the orchestrator.
function emit(obj) {
  process.stdout.write(`${JSON.stringify(obj)}\n`);
}

module.exports = { keysOf, nowMs, emit };
