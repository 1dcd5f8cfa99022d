"use strict";
// One load-generator process of `python -m bench.colyseus`: `count` clients in one room.
//
//   node clients.js '{"port": 2567, "roomId": "...", "first": 0, "count": 500, "client": "wire", ...}'
//
// Each client joins with its number (the server puts the objects of that client's keys in its
// StateView) and notes every change of an object's `ts` it receives: one "client update", whose
// state age is the receipt time minus `ts`. The clients (`client`):
//   wire     Colyseus's protocol on a bare `ws` socket (matchmaking HTTP request, websocket, JOIN_ROOM
//            acknowledged): each patch's `ts` values are read off the wire with @colyseus/schema's
//            decode primitives, without building the state. Light: a colyseus.js client holds a
//            decoded copy of everything it sees (about 0.9 KB an object: 10,000 objects for each
//            client of the no-view row, gigabytes a process).
//   changes  colyseus.js; each patch's changes from the decoder's raw change list
//            (@colyseus/schema getRawChangesCallback)
//   listen   colyseus.js with its documented state callbacks, a listen("ts") per object
//
// Prints {"ready": true, ...} once every client has joined, then reads commands on stdin:
//   {"cmd": "window", "window": [t0, t1]}  count what arrives inside [t0, t1) (epoch seconds)
//   {"cmd": "report"}   print the window's counts, age histogram (0.1 ms bins) and bytes received
//   {"cmd": "stop"}     exit
const readline = require("node:readline");
const WebSocket = require("ws");
const { Client, getStateCallbacks } = require("colyseus.js");
const { getRawChangesCallback, decode } = require("@colyseus/schema");
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
  // wire client: patches inside the window it could not read (none expected: only `ts` changes then)
  unparsed: 0,
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

function error(text) {
  if (tally.errors.length < 5) tally.errors.push(text);
}

// -- colyseus.js clients ----------------------------------------------------------------------

function watch(room) {
  if (cfg.client === "listen") {
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
  room.onError((code, message) => error(`error ${code}: ${message}`));
}

async function joinColyseusJs(client, i) {
  const room = await client.joinById(cfg.roomId, { client: i });
  watch(room);
  return room;
}

// -- wire clients ------------------------------------------------------------------------------

// Colyseus 0.16's protocol codes (colyseus.js Protocol) and @colyseus/schema's encoding.
const JOIN_ROOM = 10;
const ERROR = 11;
const ROOM_STATE_PATCH = 15;
const SWITCH_TO_STRUCTURE = 255;
const OP_MASK = 0xc0; // ADD 128, REPLACE 0, DELETE 64, DELETE_AND_ADD 192; the low 6 bits are the field index
const DELETE = 64;
// Obj's fields, in their declaration order in server.js: k (uint16), ts (float64).
const FIELD_K = 0;
const FIELD_TS = 1;

// One ROOM_STATE_PATCH: every structure it switches to is an Obj (in steady state only `ts`
// changes); false if it holds anything else (the view's additions at join time, say).
function readPatch(bytes) {
  const it = { offset: 1 };
  const stamps = [];
  while (it.offset < bytes.length) {
    const b = bytes[it.offset++];
    if (b === SWITCH_TO_STRUCTURE) {
      decode.number(bytes, it); // the Obj's refId
      continue;
    }
    const field = b & ~OP_MASK;
    if ((b & OP_MASK) === DELETE) return false;
    if (field === FIELD_TS) stamps.push(decode.float64(bytes, it));
    else if (field === FIELD_K) it.offset += 2;
    else return false;
  }
  if (it.offset !== bytes.length) return false;
  for (const stamp of stamps) seen(stamp);
  return true;
}

async function joinWire(i) {
  const answer = await fetch(`http://127.0.0.1:${cfg.port}/matchmake/joinById/${cfg.roomId}`, {
    method: "POST",
    headers: { Accept: "application/json", "Content-Type": "application/json" },
    body: JSON.stringify({ client: i }),
  });
  const seat = await answer.json();
  if (seat.error) throw new Error(`matchmaking: ${seat.error}`);
  const url = `ws://127.0.0.1:${cfg.port}/${seat.room.processId}/${seat.room.roomId}?sessionId=${seat.sessionId}`;
  const ws = new WebSocket(url, { perMessageDeflate: false });
  return new Promise((resolve, reject) => {
    let joined = false;
    ws.on("message", (data) => {
      const t = nowMs();
      const inWindow = t >= tally.t0 && t < tally.t1;
      if (inWindow) {
        tally.bytes += frameBytes(data.length);
        tally.messages++;
      }
      const code = data[0];
      if (code === ROOM_STATE_PATCH) {
        if (!readPatch(data) && inWindow) tally.unparsed++;
      } else if (code === JOIN_ROOM && !joined) {
        joined = true;
        ws.send(Buffer.from([JOIN_ROOM])); // acknowledge: the server then sends the full state
        resolve(ws);
      } else if (code === ERROR) {
        const it = { offset: 1 };
        error(`error ${decode.number(data, it)}: ${decode.string(data, it)}`);
      }
    });
    ws.on("close", () => {
      if (joined) tally.closed++;
      else reject(new Error(`client ${i}: the websocket closed before JOIN_ROOM`));
    });
    ws.on("error", (err) => {
      if (joined) error(String(err));
      else reject(err);
    });
  });
}

// -- the process -------------------------------------------------------------------------------

async function joinAll() {
  const client = new Client(`ws://127.0.0.1:${cfg.port}`);
  const rooms = [];
  let next = 0;
  async function worker() {
    while (next < cfg.count) {
      const i = cfg.first + next++;
      rooms.push(cfg.client === "wire" ? await joinWire(i) : await joinColyseusJs(client, i));
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
    tally.count = tally.bytes = tally.messages = tally.unparsed = 0;
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
      unparsed: tally.unparsed,
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
