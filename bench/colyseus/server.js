"use strict";
// The Colyseus side of `python -m bench.colyseus`: one Colyseus server process holding one room,
// whose state is every object of the workload, and the simulation (the room's simulation interval).
//
//   node server.js '{"port": 2567, "view": true, "keys": 100, ...}'
//
// Talks to the orchestrator in JSON lines: it prints {"ready": true, "roomId": ...} once the room
// exists, then reads commands on stdin:
//   {"cmd": "rate", "rate": R}        change R objects a second from now on (the first one starts the simulation)
//   {"cmd": "window", "window": [t0, t1]}  count the changes stamped inside [t0, t1) (epoch seconds), per key
//   {"cmd": "report"}                 print the window's counts (and the event loop's delay in it)
//   {"cmd": "stop"}                   exit
const { performance, monitorEventLoopDelay } = require("node:perf_hooks");
const readline = require("node:readline");
const { Server, Room, matchMaker } = require("@colyseus/core");
const { WebSocketTransport } = require("@colyseus/ws-transport");
const { schema, StateView, Encoder } = require("@colyseus/schema");
const { keysOf, nowMs, emit } = require("./common");

const cfg = JSON.parse(process.argv[2]);

// One object of the workload: the key it belongs to, and the wall-clock time (ms) of its last change.
const Obj = schema({ k: "uint16", ts: "float64" }, "Obj");
// The state: every object, by id. With `view: true` an object reaches only the clients whose
// StateView holds it (interest management); without, every client gets every change.
const ViewState = schema({ objects: { map: Obj, view: true } }, "ViewState");
const OpenState = schema({ objects: { map: Obj } }, "OpenState");

// The full state of 10,000 objects is larger than the default 8 KB encode buffer
// (the encoder warns and grows it at the first full encode otherwise).
Encoder.BUFFER_SIZE = 4 * 1024 * 1024;

// What the orchestrator tells the room, and what the room counts for it.
const sim = {
  rate: 0,
  running: false,
  owed: 0,
  last: 0,
  pos: 0,
  ticks: 0,
  lateTicks: 0,
  changes: 0,
  t0: Infinity,
  t1: Infinity,
  inWindow: 0,
  perKey: new Array(cfg.keys).fill(0),
  lateInWindow: 0,
};
const LOOP_RESOLUTION_MS = 10;
const loopDelay = monitorEventLoopDelay({ resolution: LOOP_RESOLUTION_MS });
let loopSnapshot = null;

class FanoutRoom extends Room {
  onCreate() {
    this.autoDispose = false;
    this.patchRate = cfg.patchMs;
    const state = cfg.view ? new ViewState() : new OpenState();
    this.byKey = [];
    // Round-robin order: object j of key k is change number j * keys + k, so every tick spreads over the keys.
    this.order = [];
    for (let k = 0; k < cfg.keys; k++) {
      const objs = [];
      for (let j = 0; j < cfg.objectsPerKey; j++) {
        const obj = new Obj({ k, ts: 0 });
        state.objects.set(`o${k}_${j}`, obj);
        objs.push(obj);
      }
      this.byKey.push(objs);
}
    for (let j = 0; j < cfg.objectsPerKey; j++) {
      for (let k = 0; k < cfg.keys; k++) this.order.push(this.byKey[k][j]);
}
    this.state = state;
    this.setSimulationInterval(() => this.tick(), 1000 / cfg.tickHz);
  }

  onJoin(client, options) {
    if (!cfg.view) return;
    // Each client its own StateView holding the objects of its keys.
    client.view = new StateView();
    for (const k of keysOf(Number(options.client), cfg.keys, cfg.keysPerClient)) {
      for (const obj of this.byKey[k]) client.view.add(obj);
}
  }

  tick() {
    const now = nowMs();
    if (!sim.running) {
      sim.last = now;
      return;
}
    const dtMs = 1000 / cfg.tickHz;
    const elapsed = now - sim.last;
    sim.last = now;
    sim.ticks++;
    const late = elapsed > 2 * dtMs;
    if (late) sim.lateTicks++;
    // The simulation keeps its rate in wall-clock time even when the loop runs late (a busy
    // server or machine): the world does not slow down with the server. (At most a second's worth at once.)
    sim.owed += (sim.rate * Math.min(elapsed, 1000)) / 1000;
    const n = Math.floor(sim.owed);
    sim.owed -= n;
    const inWindow = sim.t0 <= now && now < sim.t1;
    if (inWindow && late) sim.lateInWindow++;
    const order = this.order;
    for (let i = 0; i < n; i++) {
      const obj = order[sim.pos];
      sim.pos = (sim.pos + 1) % order.length;
      obj.ts = now;
      if (inWindow) sim.perKey[obj.k]++;
}
    sim.changes += n;
    if (inWindow) sim.inWindow += n;
  }
}

function snapshotLoop() {
  // The histogram holds whole probe intervals: the loop's lateness is what exceeds the resolution.
  const late = (ns) => Math.max(0, ns / 1e6 - LOOP_RESOLUTION_MS);
  loopSnapshot = {
    p50_ms: late(loopDelay.percentile(50)),
    p99_ms: late(loopDelay.percentile(99)),
    max_ms: late(loopDelay.max),
  };
}

function command(cmd) {
  if (cmd.cmd === "rate") {
    sim.rate = Number(cmd.rate);
    sim.owed = 0;
    sim.last = nowMs();
    sim.running = true;
  } else if (cmd.cmd === "window") {
    sim.t0 = cmd.window[0] * 1000;
    sim.t1 = cmd.window[1] * 1000;
    sim.inWindow = 0;
    sim.lateInWindow = 0;
    sim.perKey.fill(0);
    loopSnapshot = null;
    setTimeout(() => loopDelay.reset(), Math.max(0, sim.t0 - nowMs()));
    setTimeout(() => snapshotLoop(), Math.max(0, sim.t1 - nowMs()));
  } else if (cmd.cmd === "report") {
    if (loopSnapshot === null) snapshotLoop(); // (a busy loop may read the command before the timer)
    emit({
      changes: sim.changes,
      in_window: sim.inWindow,
      per_key: sim.perKey,
      ticks: sim.ticks,
      late_ticks: sim.lateTicks,
      late_ticks_in_window: sim.lateInWindow,
      loop_delay: loopSnapshot,
    });
  } else if (cmd.cmd === "stop") {
    process.exit(0);
  }
}

async function main() {
  const server = new Server({ transport: new WebSocketTransport(), greet: false, gracefullyShutdown: false });
  server.define("fanout", FanoutRoom);
  await server.listen(cfg.port, "127.0.0.1");
  const room = await matchMaker.createRoom("fanout", {});
  loopDelay.enable();
  const lines = readline.createInterface({ input: process.stdin });
  lines.on("line", (line) => command(JSON.parse(line)));
  lines.on("close", () => process.exit(0));
  emit({ ready: true, roomId: room.roomId, started_ms: performance.timeOrigin });
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
