// The client against the real thing: e2e/harness.py runs a private
// redis-server, a `synk serve` gateway on it and a small synk.World of
// agents; these tests drive the world and check that a Node client (on the
// "ws" package) mirrors exactly what the store holds, through subscribing,
// changes and moves, unsubscribing, a gateway restart, a Redis restart and a
// store reset. Every wait polls a condition with a deadline; nothing sleeps.
import { test, before, after } from "node:test"
import assert from "node:assert/strict"
import { isDeepStrictEqual } from "node:util"
import { WebSocket } from "ws"

import { Synk } from "../index.js"
import { startHarness } from "./harness.js"
import { until } from "./python.js"

let h
/** Every client made, closed at the end even when a test failed half-way (they would reconnect forever). */
const clients = []

before(async () => {
  h = await startHarness()
})

after(async () => {
  for (const c of clients) c.synk.close()
  if (h) assert.equal(await h.quit(), 0, `the harness exits cleanly\n${h.log()}`)
})

const CHUNK = 16
/** The subscription key of chunk (cx, cy), as the harness's Agent.sub_key makes it. */
const key = (cx, cy = 0) => `world:${cx}|${cy}`
/** A position inside chunk (cx, cy). */
const at = (cx, cy = 0, dx = 1, dy = 1) => ({ x: cx * CHUNK + dx, y: cy * CHUNK + dy })

/**
 * A client following `keys`, with "agent" registered as a class that logs
 * its construction and teardown, and every socket frame it receives kept
 * in `frames` (a tap on the "ws" WebSocket; a batch frame's messages one by one).
 */
function client(keys) {
  // snapsAtHello[n]: how many snaps had come when the (n+1)th hello did.
  const c = { log: [], events: [], errors: [], closes: [], frames: [], snaps: [], snapsAtHello: [], hellos: 0, sockets: [] }
  class TappedWebSocket extends WebSocket {
    constructor(url) {
      super(url)
      c.sockets.push(this)
      this.addEventListener("message", (e) => c.frames.push(...[JSON.parse(e.data)].flat()))
    }
  }
  class Agent {
    constructor(id, state) {
      this.id = id
      this.state = { ...state }
      c.log.push(["new", id])
    }
    update(diff) {
      Object.assign(this.state, diff)
    }
    teardown() {
      c.log.push(["teardown", this.id])
    }
  }
  c.synk = new Synk(h.url, { WebSocket: TappedWebSocket, backoff: { min: 50, max: 400 } })
  // Kept at once, before anything below can throw: a client left out of `clients`
  // is never closed, and its reconnects would keep the test file running.
  clients.push(c)
  c.synk.objects.register("agent", Agent)
  c.synk.on("error", (e) => c.errors.push(e))
  c.synk.on("close", (info) => c.closes.push(info))
  c.synk.on("hello", () => {
    c.hellos++
    c.snapsAtHello.push(c.snaps.length)
  })
  c.synk.objects.on("snap", (sKey) => c.snaps.push(sKey))
  c.synk.objects.on("mod", (obj, msg) => c.events.push([msg.method, msg.id, msg.nsKey ?? msg.psKey ?? null]))
  c.synk.setSubscription(keys)
  c.count = (what, id) => c.log.filter(([w, i]) => w === what && i === id).length
  /** Errors other than failed connection attempts. */
  c.unexpectedErrors = () => c.errors.filter((e) => e.code !== "socket_error")
  c.close = () => {
    c.synk.setSubscription([])
    c.synk.close()
  }
  return c
}

/** What a client mirrors over its keys: {id: {sKey, v, i, state}}, like the harness's "state". */
function mirrored(synk) {
  const out = {}
  for (const sKey of synk.objects.keys()) {
    for (const obj of synk.objects.byKey(sKey)) {
      const e = synk.objects.entry(obj.id)
      out[obj.id] = { sKey: e.sKey, v: e.v, i: e.i, state: { ...obj.state } }
    }
  }
  return out
}

/** Wait until the client's mirror equals the store over its keys; on timeout, show the difference. */
function converge(c, what, timeoutMs) {
  return h.converge(() => mirrored(c.synk), c.synk.objects.keys(), what, timeoutMs)
}

/** Wait until the client has the snapshot of every key it follows, since its latest hello. */
async function snapped(c) {
  const keys = c.synk.objects.keys()
  await until(() => c.hellos > 0 && keys.every((k) => c.snaps.slice(c.snapsAtHello.at(-1)).includes(k)), `snapshots of ${keys}`)
}

async function create(id, pos, name = id) {
  return h.call("create", { id, ...pos, name })
}

const set = (id, fields) => h.call("set", { id, fields })

test("subscribing: the initial snapshot is exactly the store's objects of the keys", async () => {
  for (const [id, pos] of [["s1", at(0)], ["s2", at(0, 0, 5, 9)], ["s3", at(0, 0, 15, 15)], ["s4", at(1)], ["s5", at(1, 0, 2, 3)], ["s-far", at(5, 5)]]) {
    await create(id, pos)
  }
  await h.call("flush")
  const c = client([key(0), key(1)])
  await snapped(c)
  const store = await converge(c, "after subscribing")
  assert.deepEqual(Object.keys(store).sort(), ["s1", "s2", "s3", "s4", "s5"])
  assert.equal(c.synk.objects.has("s-far"), false, "objects of other keys are not mirrored")
  assert.deepEqual(c.log.map(([what, id]) => `${what} ${id}`).sort(), ["new s1", "new s2", "new s3", "new s4", "new s5"])
  assert.ok(Object.values(mirrored(c.synk)).every((o) => o.v === 1 && typeof o.i === "string" && o.i.length > 0), "version 1 and an incarnation")
  assert.deepEqual(c.unexpectedErrors(), [])
  c.close()
})

test("changes, moves between subscribed keys and out to an unsubscribed key", async () => {
  const A = key(10)
  const B = key(11)
  const FAR = key(12)
  for (const [id, pos] of [["m-a1", at(10)], ["m-a2", at(10, 0, 3, 3)], ["m-b1", at(11)], ["m-d1", at(11, 0, 4, 4)], ["m-f1", at(12)]]) {
    await create(id, pos)
  }
  await h.call("flush")
  const c = client([A, B])
  await snapped(c)
  await converge(c, "initial")
  const a1 = c.synk.objects.get("m-a1")
  const a2 = c.synk.objects.get("m-a2")

  await set("m-a1", { name: "renamed" }) // in place
  await set("m-a2", at(11, 0, 8, 8)) // A -> B: both followed
  await set("m-b1", at(12, 0, 9, 9)) // B -> FAR: leaves the mirror
  await set("m-f1", at(10, 0, 9, 9)) // FAR -> A: enters the mirror
  await h.call("delete", { id: "m-d1" })
  await create("m-n1", at(11, 0, 12, 1))
  await h.call("flush")
  const store = await converge(c, "after changes and moves")
  assert.equal(store["m-a2"].sKey, B)
  assert.equal(store["m-f1"].sKey, A)
  assert.equal((await h.stored([FAR]))["m-b1"].sKey, FAR, "m-b1 is in FAR now")
  assert.equal(c.synk.objects.has("m-b1"), false)
  assert.equal(c.synk.objects.get("m-a1"), a1, "changed in place")
  assert.equal(c.synk.objects.get("m-a2"), a2, "moved in place")
  assert.equal(a1.state.name, "renamed")
  assert.ok(c.events.some((e) => isDeepStrictEqual(e, ["mod", "m-a2", B])), "the move between followed keys came as a mod with nsKey")
  assert.ok(!c.events.some((e) => e[0] === "add" && e[1] === "m-a2"), "and its add with psKey was filtered out")
  for (const id of ["m-b1", "m-d1"]) assert.equal(c.count("teardown", id), 1, `${id} torn down once`)
  for (const id of ["m-a1", "m-a2"]) assert.equal(c.count("teardown", id), 0, `${id} not torn down`)
  for (const id of ["m-f1", "m-n1"]) assert.equal(c.count("new", id), 1, `${id} added once`)

  // A burst of simulation: agents wander over both followed keys, crossing
  // between them, many flushes a second.
  const ids = ["m-a1", "m-a2", "m-f1", "m-n1"]
  const before = JSON.stringify(mirrored(c.synk))
  const logBefore = c.log.length
  await h.call("start_sim", { ids, bounds: [10 * CHUNK, 0, 12 * CHUNK, CHUNK], step: 4, hz: 40 })
  await until(async () => (await h.call("sim")).ticks >= 40, "40 simulation ticks", 15000)
  const { ticks } = await h.call("stop_sim")
  const after = await converge(c, `after ${ticks} simulation ticks`)
  assert.notEqual(JSON.stringify(after), before, "the simulation changed things")
  assert.ok(c.events.some(([method, , nsKey]) => method === "mod" && nsKey !== null), "some crossed keys")
  assert.deepEqual(c.log.slice(logBefore), [], "moves between followed keys never tear down or re-create")
  assert.deepEqual(c.unexpectedErrors(), [])
  c.close()
})

test("unsubscribing a key removes its objects, tearing each down once; nothing more of it arrives", async () => {
  const A = key(20)
  const B = key(21)
  for (const [id, pos] of [["u-a1", at(20)], ["u-a2", at(20, 0, 2, 2)], ["u-a3", at(20, 0, 3, 3)], ["u-b1", at(21)], ["u-b2", at(21, 0, 2, 2)]]) {
    await create(id, pos)
  }
  await h.call("flush")
  const c = client([A, B])
  await snapped(c)
  await converge(c, "initial")

  c.synk.setSubscription([B])
  assert.deepEqual(c.synk.objects.byKey(A), [], "removed at once")
  for (const id of ["u-a1", "u-a2", "u-a3"]) {
    assert.equal(c.synk.objects.has(id), false)
    assert.equal(c.count("teardown", id), 1, `${id} torn down once`)
  }
  // A resync of B is answered after the gateway has handled the unsubscribe
  // (a client's messages are handled in order): from its snap on, no frame of A.
  const socket = c.sockets.at(-1)
  const snapsBefore = c.snaps.length
  socket.send(JSON.stringify({ method: "resync", keys: [B] }))
  await until(() => c.snaps.slice(snapsBefore).includes(B), "the resync's snap of B")
  const mark = c.frames.length
  await set("u-a1", { name: "changed while unsubscribed" })
  await set("u-a2", at(21, 0, 5, 5)) // A -> B: arrives as an add with psKey
  await set("u-b1", { name: "changed" })
  await h.call("flush")
  await converge(c, "B after A was dropped")
  assert.deepEqual(c.frames.slice(mark).filter((f) => f.sKey === A), [], "nothing of A after the unsubscribe")
  assert.ok(c.frames.slice(mark).some((f) => f.method === "add" && f.id === "u-a2" && f.psKey === A), "u-a2 moved in")
  assert.equal(c.count("new", "u-a2"), 2, "u-a2 came back as a new object")
  for (const id of ["u-a1", "u-a2", "u-a3", "u-b1", "u-b2"]) {
    assert.equal(c.count("teardown", id), id.startsWith("u-a") ? 1 : 0, `${id} teardowns`)
  }
  assert.deepEqual(c.unexpectedErrors(), [])
  c.close()
})

test("a gateway restart: the client reconnects with backoff and reconciles in place", async () => {
  const A = key(30)
  const B = key(31)
  const FAR = key(32)
  const ids = ["g-s1", "g-s2", "g-s3", "g-gone", "g-out", "g-mover"]
  for (const [id, pos] of [["g-s1", at(30)], ["g-s2", at(30, 0, 2, 2)], ["g-s3", at(31)], ["g-gone", at(30, 0, 4, 4)], ["g-out", at(31, 0, 5, 5)], ["g-mover", at(30, 0, 6, 6)]]) {
    await create(id, pos)
  }
  await h.call("flush")
  await set("g-s2", { name: "v2" })
  await h.call("flush")
  const c = client([A, B])
  await snapped(c)
  await converge(c, "initial")
  const instances = Object.fromEntries(ids.map((id) => [id, c.synk.objects.get(id)]))

  const { code } = await h.call("stop_gateway")
  assert.equal(code, 0, "the gateway exits cleanly on SIGTERM")
  await until(() => c.closes.length >= 1, "the client to see the close")
  assert.equal(c.closes[0].code, 1001, "closed as going away")
  // While it is down: changes in place, a deletion, a move out, a move
  // between the followed keys, a new object.
  await set("g-s1", { name: "changed while down" })
  await set("g-s3", at(31, 0, 9, 9))
  await h.call("delete", { id: "g-gone" })
  await set("g-out", at(32, 0, 1, 1))
  await set("g-mover", at(31, 0, 7, 7))
  await create("g-new", at(30, 0, 8, 8))
  await h.call("flush")
  await until(() => c.closes.length >= 3, "two failed reconnect attempts (refused)")
  await h.call("start_gateway")
  await until(() => c.hellos === 2, "the reconnect")
  await snapped(c)
  const store = await converge(c, "after the gateway restart")
  assert.ok(!(store["g-gone"] || store["g-out"]))
  assert.equal((await h.stored([FAR]))["g-out"].sKey, FAR, "g-out is in FAR now")
  assert.equal(store["g-mover"].sKey, B)
  for (const id of ["g-s1", "g-s2", "g-s3"]) {
    assert.equal(c.synk.objects.get(id), instances[id], `${id} updated in place`)
    assert.equal(c.count("teardown", id), 0, `${id} never torn down`)
  }
  assert.equal(c.synk.objects.get("g-s1").state.name, "changed while down")
  for (const id of ["g-gone", "g-out"]) assert.equal(c.count("teardown", id), 1, `${id} torn down once`)
  assert.equal(c.count("new", "g-new"), 1)
  // g-mover went from A to B while the client was away. The gateway
  // snapshots each key on its own, in any order; A's snap may come before
  // B's add, but the client waits for every key's snap before removing, so
  // it is moved in place: the same instance, never torn down or re-created,
  // one update by B's snapshot add.
  assert.equal(c.synk.objects.get("g-mover"), instances["g-mover"], "g-mover moved in place")
  assert.equal(c.count("teardown", "g-mover"), 0, "g-mover never torn down")
  assert.equal(c.count("new", "g-mover"), 1, "g-mover never re-created")
  assert.equal(c.synk.objects.entry("g-mover").sKey, B)
  assert.deepEqual(c.events.filter(([, id]) => id === "g-mover"), [["add", "g-mover", null]], "one update, by the snapshot's add")
  // Reconnect delays: full jitter under the growing cap (50, 100, 200, ... ms).
  c.closes.forEach((close, n) => assert.ok(close.delay >= 0 && close.delay < Math.min(400, 50 * 2 ** n), `delay ${close.delay} of attempt ${n}`))
  assert.ok(c.closes.slice(1).every((close) => close.code === 1006), "the refused attempts")
  assert.deepEqual(c.unexpectedErrors(), [])

  // And it goes on live.
  await set("g-s2", { name: "after" })
  await h.call("flush")
  await converge(c, "live after the restart")
  c.close()
})

/** Create agents, bump their versions a few times, and have a client follow their keys. */
async function versionedWorld(prefix, keys, placements) {
  for (const [id, pos] of placements) await create(id, pos)
  await h.call("flush")
  for (let n = 2; n <= 4; n++) {
    for (const [id] of placements) await set(id, { name: `${id} v${n}` })
    await h.call("flush")
  }
  const c = client(keys)
  await snapped(c)
  const store = await converge(c, `${prefix}: initial`)
  assert.ok(Object.values(store).every((o) => o.v === 4))
  return { c, store }
}

test("a Redis restart: the gateway re-snapshots, the re-created objects (new incarnations) replace the old", async (t) => {
  const A = key(40)
  const B = key(41)
  const placements = [["r-1", at(40)], ["r-2", at(40, 0, 3, 3)], ["r-3", at(41)]]
  const { c, store: old } = await versionedWorld("redis", [A, B], placements)
  const instances = Object.fromEntries(placements.map(([id]) => [id, c.synk.objects.get(id)]))

  const { recreated } = await h.call("restart_redis")
  assert.ok(recreated >= placements.length)
  // The new incarnations start again at version 1; change one so it is at 2.
  await set("r-1", { name: "after the restart" })
  await h.call("flush")
  const store = await converge(c, "after the Redis restart", 20000)
  for (const [id] of placements) assert.notEqual(store[id].i, old[id].i, `${id} is a new incarnation`)
  assert.equal(store["r-1"].v, 2)
  assert.equal(c.synk.objects.get("r-1").state.name, "after the restart")
  // Whether the client saw an empty snapshot first (the gateway re-snapshot
  // before the harness re-created the objects: removed, then added anew) or
  // the new incarnations over the old (updated in place) depends on timing.
  const inPlace = placements.filter(([id]) => c.synk.objects.get(id) === instances[id]).length
  t.diagnostic(`${inPlace} of ${placements.length} objects updated in place, the others re-created`)
  for (const [id] of placements) {
    assert.equal(c.count("teardown", id), c.synk.objects.get(id) === instances[id] ? 0 : 1, `${id}: torn down only if re-created`)
  }
  assert.deepEqual(c.unexpectedErrors(), [])

  // Live again.
  await set("r-3", at(40, 0, 9, 9))
  await h.call("flush")
  await converge(c, "live after the Redis restart")
  c.close()
})

test("a store reset under a live gateway: new incarnations replace the old in place, whatever their versions", async () => {
  const A = key(50)
  const B = key(51)
  const placements = [["z-1", at(50)], ["z-2", at(50, 0, 3, 3)], ["z-3", at(51)]]
  const { c, store: old } = await versionedWorld("reset", [A, B], placements)
  const instances = Object.fromEntries(placements.map(([id]) => [id, c.synk.objects.get(id)]))

  // FLUSHDB with every connection up: the gateway sees no reconnect and sends
  // no snapshot; the client only gets the new incarnations' adds, at version
  // 1, below the 4 it mirrors. Versions alone would drop them as stale.
  await h.call("reset_store")
  await set("z-2", { name: "after the reset" })
  await h.call("flush")
  const store = await converge(c, "after the store reset")
  for (const [id] of placements) {
    assert.notEqual(store[id].i, old[id].i, `${id} is a new incarnation`)
    assert.equal(c.synk.objects.get(id), instances[id], `${id} updated in place`)
    assert.equal(c.count("teardown", id), 0, `${id} never torn down`)
  }
  assert.deepEqual(
    placements.map(([id]) => store[id].v),
    [1, 2, 1]
  )
  assert.equal(c.synk.objects.get("z-2").state.name, "after the reset")
  assert.deepEqual(c.unexpectedErrors(), [])
  c.close()
})
