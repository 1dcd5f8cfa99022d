"use strict";
// One load-generator process of `python -m bench.colyseus`: `count` colyseus.js clients in one room.
//
//   node clients.js '{"port": 2567, "roomId": "...", "first": 0, "count": 500, ...}'
//
// Each client joins with its number (the server puts the objects of that client's keys in its
// StateView), and notes every change of an object's `ts` it decodes: one "client update", whose
// state age is the receipt time minus `ts`. How a change is seen (`hook`):
//   raw     the decoder's raw change list of each patch (@colyseus/schema getRawChangesCallback)
//   listen  colyseus.js's state callbacks, a listen("ts") per object (the documented client API; more CPU)
//
// Prints {"ready": true, ...} once every client has joined, then reads commands on stdin:
//   {"cmd": "window", "window": [t0, t1]}  count what arrives inside [t0, t1) (epoch seconds)
//   {"cmd": "report"}   print the window's counts, age histogram (0.1 ms bins) and bytes received
//   {"cmd": "stop"}     exit
const readline = require("node:readline");
const { Client, getStateCallbacks } = require("colyseus.js");
const { getRawChangesCallback } = require("@colyseus/schema");
const { nowMs, emit } = require("./common");

const cfg = JSON.parse(process.argv[2]);
const BINS = 300000; // 0.1 ms bins up to 30 s, the last one holding anything slower
const BINS_PER_MS = 10;

const tally = {
  t0: Infinity,
  t1: Infinity,
  count: 0,
  bytes: 0,
  messages: 0,
  hist: new Uint32Array(BINS),
  closed: 0,
  errors: [],
};

// A change of `ts` to `stamp` (ms) decoded now.
function seen(stamp) {
  const t = nowMs();
  if (t < tally.t0 || t >= tally.t1 || !(stamp > 0)) return;
  tally.count++;
  const b = Math.floor((t - stamp) * BINS_PER_MS);
  tally.hist[b < 0 ? 0 : b < BINS ? b : BINS - 1]++;
}

// The bytes of one websocket frame from the server: payload and (unmasked) header.
function frameBytes(length) {
  return length + (length < 126 ? 2 : length < 65536 ? 4 : 10);
}

function watch(room) {
  if (cfg.hook === "listen") {
    const $ = getStateCallbacks(room);
    $(room.state).objects.onAdd((obj) => {
      $(obj).listen("ts", (value) => seen(value));
    });
  } else {
    getRawChangesCallback(room.serializer.decoder, (changes) => {
      for (let i = 0; i < changes.length; i++) {
        if (changes[i].field === "ts") seen(changes[i].value);
      }
    });
  }
  // Every message the websocket delivers (the `ws` package's socket under colyseus.js's transport).
  room.connection.transport.ws.on("message", (data) => {
    const t = nowMs();
    if (t >= tally.t0 && t < tally.t1) {
      tally.bytes += frameBytes(data.byteLength);
      tally.messages++;
    }
  });
  room.onLeave(() => {
    tally.closed++;
  });
  room.onError((code, message) => {
    if (tally.errors.length < 5) tally.errors.push(`error ${code}: ${message}`);
  });
}

async function joinAll() {
  const client = new Client(`ws://127.0.0.1:${cfg.port}`);
  const rooms = [];
  let next = 0;
  async function worker() {
    while (next < cfg.count) {
      const i = cfg.first + next++;
      const room = await client.joinById(cfg.roomId, { client: i });
      watch(room);
      rooms.push(room);
    }
  }
  const workers = [];
  for (let w = 0; w < Math.min(cfg.gate, cfg.count); w++) workers.push(worker());
  await Promise.all(workers);
  return rooms;
}

function command(cmd) {
  if (cmd.cmd === "window") {
    tally.t0 = cmd.window[0] * 1000;
    tally.t1 = cmd.window[1] * 1000;
    tally.count = tally.bytes = tally.messages = 0;
    tally.hist.fill(0);
  } else if (cmd.cmd === "report") {
    const hist = {};
    for (let b = 0; b < BINS; b++) if (tally.hist[b]) hist[b] = tally.hist[b];
    emit({
      count: tally.count,
      bytes: tally.bytes,
      messages: tally.messages,
      hist,
      closed: tally.closed,
      errors: tally.errors,
    });
  } else if (cmd.cmd === "stop") {
    process.exit(0);
  }
}

async function main() {
  const started = nowMs();
  const rooms = await joinAll();
  const lines = readline.createInterface({ input: process.stdin });
  lines.on("line", (line) => command(JSON.parse(line)));
  lines.on("close", () => process.exit(0));
  emit({ ready: true, joined: rooms.length, join_s: (nowMs() - started) / 1000 });
}

main().catch((err) => {
  emit({ ready: false, error: String(err && err.stack ? err.stack : err) });
  process.exit(1);
});
