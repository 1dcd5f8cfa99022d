// Tests of the connection layer with a fake WebSocket and fake timers: every
// step is driven by the test, nothing sleeps.
import { test } from "node:test"
import assert from "node:assert"

import { Synk, backoffDelay } from "../index.js"
import { fakeClock } from "./support/fake-clock.js"


/**
 * A Synk on a fake WebSocket class. `events` records, in order, the frames
 * the client sends ("send"), or sends in vain on a closing or closed socket
 * ("lost"), the sockets it creates ("connect"), the Synk's events and the
 * mirror's events, and teardown() calls of "agent" objects.
 */
function setup(options = {}) {
  const events = []
  const sockets = []
  const clock = fakeClock()

  class FakeWebSocket {
    readyState = 0 // CONNECTING
    constructor(url) {
      this.url = url
      sockets.push(this)
      events.push(["connect", url])
    }
    // As browsers do: a send throws only while CONNECTING, and is silently
    // discarded while CLOSING or CLOSED.
    send(data) {
      if (this.readyState === 0) throw new DOMException("Still in CONNECTING state.", "InvalidStateError")
      events.push([this.readyState === 1 ? "send" : "lost", JSON.parse(data)])
    }
    close(code) {
      this.readyState = 3
      events.push(["socket.close", code])
    }
    // Test drivers: what the network and the gateway do.
    open() {
      this.readyState = 1
      this.onopen({})
    }
    receive(msg) {
      this.onmessage({ data: typeof msg === "string" ? msg : JSON.stringify(msg) })
    }
    drop(code = 1006) {
      this.readyState = 3
      this.onerror({})
      this.onclose({ code, reason: "", wasClean: false })
    }
  }

  const synk = new Synk("ws://gateway/", {
    WebSocket: FakeWebSocket,
    setTimeout: clock.setTimeout,
    clearTimeout: clock.clearTimeout,
    random: () => 0.5,
    backoff: { min: 100, max: 1000 },
    ...options
  })
  synk.on("open", () => events.push(["open"]))
  synk.on("close", info => events.push(["close", info]))
  synk.on("error", e => events.push(["error", e]))
  synk.on("message", msg => events.push(["message", msg]))
  synk.on("hello", id => events.push(["hello", id]))
  synk.objects.on("add", (obj, msg) => events.push(["add", msg.id, msg.v]))
  synk.objects.on("mod", (obj, msg) => events.push(["mod", msg.id, msg.v, msg.method]))
  synk.objects.on("rem", (obj, cause) => events.push(["rem", obj.id, cause.method]))
  synk.objects.register("agent", class Agent {
    constructor(id) { this.id = id }
    teardown() { events.push(["teardown", this.id]) }
  })
  // The socket of the latest connection attempt.
  const socket = () => sockets[sockets.length - 1]
  return { synk, events, sockets, socket, clock }
}

const add = (id, v, sKey = "k1") => ({ method: "add", t: "agent", id, sKey, v, state: {} })
const snap = (sKey, ids) => ({ method: "snap", sKey, ids })
const closeInfo = delay => ({ code: 1006, reason: "", wasClean: false, delay })
const socketError = ["error", { code: "socket_error", reason: "WebSocket error" }]

test("on open the whole subscription goes out as one add, then hello", () => {
  const { synk, events, socket } = setup()
  synk.setSubscription(["k1", "k2"]) // before open: nothing to send yet
  assert.strictEqual(synk.connected, false)
  socket().open()
  socket().receive({ method: "hello", client: "c7" })
  assert.deepStrictEqual(events, [
    ["connect", "ws://gateway/?synk_resnap=1"],
    ["send", { method: "updateSubscription", add: ["k1", "k2"] }],
    ["open"],
    ["hello", "c7"]
  ])
  assert.strictEqual(synk.clientId, "c7")
  assert.strictEqual(synk.connected, true)
})

test("an empty subscription sends nothing on open", () => {
  const { events, socket } = setup()
  socket().open()
  assert.deepStrictEqual(events, [["connect", "ws://gateway/?synk_resnap=1"], ["open"]])
})

test("setSubscription sends only the difference, and drops removed keys' objects", () => {
  const { synk, events, socket } = setup()
  socket().open()
  synk.setSubscription(["k1", "k2"])
  socket().receive(add("a", 1, "k1"))
  socket().receive(add("b", 1, "k2"))
  synk.setSubscription(["k2", "k3"])
  synk.setSubscription(new Set(["k3", "k2"])) // same set: nothing to send
  assert.throws(() => synk.setSubscription(["k 4"]), TypeError)
  assert.deepStrictEqual(events, [
    ["connect", "ws://gateway/?synk_resnap=1"],
    ["open"],
    ["send", { method: "updateSubscription", add: ["k1", "k2"], remove: [] }],
    ["add", "a", 1],
    ["add", "b", 1],
    ["rem", "a", "unsubscribe"], ["teardown", "a"],
    ["send", { method: "updateSubscription", add: ["k3"], remove: ["k1"] }]
  ])
  assert.deepStrictEqual(synk.objects.keys(), ["k3", "k2"], "in the order last given")
})

test("reconnects with backoff, re-sends the whole subscription, reconciles in place", () => {
  const { synk, events, sockets, socket, clock } = setup()
  synk.setSubscription(["k1"])
  socket().open()
  socket().receive({ method: "hello", client: "c1" })
  for (const id of ["x", "y", "z"]) socket().receive(add(id, 1))
  socket().receive(snap("k1", ["x", "y", "z"]))
  const x = synk.objects.get("x")
  const y = synk.objects.get("y")
  events.length = 0

  socket().drop() // attempt 0: delay 0.5 * 100
  clock.advance(49)
  events.push("--- 49 ms")
  clock.advance(1)
  socket().drop() // attempt 1: delay 0.5 * 200, the connect failed
  clock.advance(100)
  socket().open()
  socket().receive({ method: "hello", client: "c2" })
  socket().receive(add("x", 1)) // unchanged: stale, dropped
  socket().receive(add("y", 2)) // changed while away: updated in place
  socket().receive(add("w", 1)) // new
  socket().receive(snap("k1", ["x", "y", "w"])) // z is gone
  assert.deepStrictEqual(events, [
    socketError, ["close", closeInfo(50)],
    "--- 49 ms",
    ["connect", "ws://gateway/?synk_resnap=1"],
    socketError, ["close", closeInfo(100)],
    ["connect", "ws://gateway/?synk_resnap=1"],
    ["send", { method: "updateSubscription", add: ["k1"] }],
    ["open"],
    ["hello", "c2"],
    ["mod", "y", 2, "add"],
    ["add", "w", 1],
    ["rem", "z", "snap"], ["teardown", "z"]
  ])
  assert.strictEqual(sockets.length, 3)
  assert.strictEqual(synk.objects.get("x"), x, "survivors keep their instance")
  assert.strictEqual(synk.objects.get("y"), y)
  assert.strictEqual(synk.clientId, "c2")

  // hello reset the backoff: the next drop waits the shortest delay again.
  events.length = 0
  socket().drop()
  assert.deepStrictEqual(events, [socketError, ["close", closeInfo(50)]])
  assert.strictEqual(synk.clientId, null)
})

test("reconnect: an object that moved between followed keys while away is moved in place", () => {
  const { synk, events, socket, clock } = setup()
  synk.setSubscription(["k1", "k2"])
  socket().open()
  socket().receive({ method: "hello", client: "c1" })
  socket().receive(add("a", 1, "k1"))
  socket().receive(add("b", 1, "k1"))
  socket().receive(snap("k1", ["a", "b"]))
  socket().receive(snap("k2", []))
  const a = synk.objects.get("a")
  events.length = 0

  // While away: "a" moved from k1 to k2, "b" was deleted. The gateway
  // snapshots k1 first: its snap no longer lists "a", which k2's add brings.
  socket().drop()
  clock.advance(50)
  socket().open()
  socket().receive({ method: "hello", client: "c2" })
  socket().receive(snap("k1", []))
  events.push("--- k1's snap")
  socket().receive(add("a", 2, "k2"))
  socket().receive(snap("k2", ["a"]))
  clock.advance(10_000)
  assert.deepStrictEqual(events, [
    socketError, ["close", closeInfo(50)],
    ["connect", "ws://gateway/?synk_resnap=1"],
    ["send", { method: "updateSubscription", add: ["k1", "k2"] }],
    ["open"],
    ["hello", "c2"],
    "--- k1's snap",
    ["mod", "a", 2, "add"],
    ["rem", "b", "snap"], ["teardown", "b"]
  ])
  assert.strictEqual(synk.objects.get("a"), a, "no teardown, no re-create")
  assert.strictEqual(synk.objects.entry("a").sKey, "k2")
  assert.strictEqual(clock.pending, 0)
})

test("a resnap notice makes the gateway's own re-snapshots one batch", () => {
  const { synk, events, socket, clock } = setup()
  synk.setSubscription(["k1", "k2"])
  socket().open()
  socket().receive({ method: "hello", client: "c1" })
  socket().receive(add("a", 1, "k1"))
  socket().receive(snap("k1", ["a"]))
  socket().receive(snap("k2", []))
  const a = synk.objects.get("a")
  events.length = 0

  // The gateway's store reconnected; meanwhile "a" moved from k1 to k2.
  socket().receive({ method: "resnap", keys: ["k1", "k2"] })
  socket().receive(snap("k1", []))
  socket().receive(add("a", 2, "k2"))
  socket().receive(snap("k2", ["a"]))
  socket().receive({ method: "resnap", keys: "k1" })
  assert.deepStrictEqual(events, [
    ["mod", "a", 2, "add"],
    ["error", { code: "bad_shape", reason: "resnap without a list of keys", msg: { method: "resnap", keys: "k1" } }]
  ])
  assert.strictEqual(synk.objects.get("a"), a, "no teardown, no re-create")
  assert.strictEqual(synk.objects.entry("a").sKey, "k2")
  assert.strictEqual(clock.pending, 0)
})

test("keys added by setSubscription are snapshotted as one batch", () => {
  const { synk, events, socket, clock } = setup({ snapTimeout: 1000 })
  synk.setSubscription(["k1"])
  socket().open()
  socket().receive(add("a", 1, "k1"))
  socket().receive(snap("k1", ["a"]))
  const a = synk.objects.get("a")
  events.length = 0

  synk.setSubscription(["k1", "k2", "k3"])
  // "a" moves from k1 (live) to k2 while k2's snapshot is on its way: the
  // mod with nsKey comes first, k2's snapshot (taken before) lacks "a", and
  // the move's add follows the snap.
  socket().receive({ method: "mod", t: "agent", id: "a", sKey: "k1", v: 2, diff: {}, nsKey: "k2" })
  socket().receive(snap("k2", []))
  socket().receive({ ...add("a", 2, "k2"), psKey: "k1" }) // stale, but it says "a" is in k2
  socket().receive(snap("k3", []))
  clock.advance(10_000)
  assert.deepStrictEqual(events, [
    ["send", { method: "updateSubscription", add: ["k2", "k3"], remove: [] }],
    ["mod", "a", 2, "mod"]
  ])
  assert.strictEqual(synk.objects.get("a"), a)
  assert.strictEqual(synk.objects.entry("a").sKey, "k2")
  assert.strictEqual(clock.pending, 0)
})

test("after a store reset, the reconnect snapshot's new incarnations update in place", () => {
  const { synk, events, socket, clock } = setup()
  synk.setSubscription(["k1"])
  socket().open()
  socket().receive({ method: "hello", client: "c1" })
  socket().receive({ ...add("x", 1), i: "old" })
  socket().receive({ method: "mod", t: "agent", id: "x", sKey: "k1", v: 2, diff: { n: 1 } })
  socket().receive({ method: "mod", t: "agent", id: "x", sKey: "k1", v: 4, diff: { n: 3 } }) // held
  socket().receive({ ...add("y", 5), i: "old" })
  socket().receive(snap("k1", ["x", "y"]))
  const x = synk.objects.get("x")
  events.length = 0

  // The gateway restarts over a store that was reset: versions start again.
  socket().drop()
  clock.advance(50)
  socket().open()
  socket().receive({ method: "hello", client: "c2" })
  socket().receive({ ...add("x", 1), i: "new", state: { n: 0 } }) // below the mirror's 2: news all the same
  socket().receive({ ...add("y", 5), i: "old" }) // same incarnation and version: stale
  socket().receive(snap("k1", ["x", "y"]))
  socket().receive({ method: "mod", t: "agent", id: "x", sKey: "k1", v: 2, diff: { n: 7 } })
  clock.advance(10_000)
  assert.deepStrictEqual(events, [
    socketError, ["close", closeInfo(50)],
    ["connect", "ws://gateway/?synk_resnap=1"],
    ["send", { method: "updateSubscription", add: ["k1"] }],
    ["open"],
    ["hello", "c2"],
    ["mod", "x", 1, "add"],
    ["mod", "x", 2, "mod"]
  ])
  assert.strictEqual(synk.objects.get("x"), x, "no teardown, no re-create")
  assert.deepStrictEqual(synk.objects.entry("x"), { id: "x", t: "agent", sKey: "k1", v: 2, i: "new", obj: x })
})

test("backoff grows exponentially with full jitter, capped at max", () => {
  const half = () => 0.5
  const delays = [0, 1, 2, 3, 4, 5, 6].map(n => backoffDelay(n, { min: 100, max: 1000 }, half))
  assert.deepStrictEqual(delays, [50, 100, 200, 400, 500, 500, 500])
  assert.strictEqual(backoffDelay(3, { min: 100, max: 1000 }, () => 0), 0)
  assert.strictEqual(backoffDelay(30, { min: 100, max: 1000 }, () => 0.999), 999)
})

test("sends made while disconnected are queued and flushed on (re)open", () => {
  const { synk, events, socket, clock } = setup()
  synk.setSubscription(["k1"])
  assert.strictEqual(synk.send("chat", { text: "early" }), true)
  socket().open()
  assert.strictEqual(synk.send("chat", { text: "live", method: "ignored" }), true)
  socket().drop()
  assert.strictEqual(synk.send("chat", { text: "while away 1" }), true)
  assert.strictEqual(synk.send("ping"), true)
  clock.advance(50)
  socket().open()
  assert.deepStrictEqual(events, [
    ["connect", "ws://gateway/?synk_resnap=1"],
    ["send", { method: "updateSubscription", add: ["k1"] }],
    ["send", { method: "chat", text: "early" }],
    ["open"],
    ["send", { method: "chat", text: "live" }],
    socketError, ["close", closeInfo(50)],
    ["connect", "ws://gateway/?synk_resnap=1"],
    ["send", { method: "updateSubscription", add: ["k1"] }],
    ["send", { method: "chat", text: "while away 1" }],
    ["send", { method: "ping" }],
    ["open"]
  ])
})

test("a socket closing (CLOSING state) queues sends instead of losing them", () => {
  const { synk, events, socket, clock } = setup()
  socket().open()
  socket().readyState = 2 // the gateway's close frame arrived; close event pending
  assert.strictEqual(synk.send("chat", { n: 1 }), true)
  socket().drop()
  clock.advance(50)
  socket().open()
  assert.deepStrictEqual(events, [
    ["connect", "ws://gateway/?synk_resnap=1"],
    ["open"],
    socketError, ["close", closeInfo(50)],
    ["connect", "ws://gateway/?synk_resnap=1"],
    ["send", { method: "chat", n: 1 }],
    ["open"]
  ])
})

test("a full queue reports the dropped message through error", () => {
  const { synk, events, socket } = setup({ maxQueue: 2 })
  assert.strictEqual(synk.send("chat", { n: 1 }), true)
  assert.strictEqual(synk.send("chat", { n: 2 }), true)
  assert.strictEqual(synk.send("chat", { n: 3 }), false)
  socket().open()
  assert.deepStrictEqual(events, [
    ["connect", "ws://gateway/?synk_resnap=1"],
    ["error", {
      code: "queue_full",
      reason: "\"chat\" dropped: 2 messages already wait for a connection",
      method: "chat"
    }],
    ["send", { method: "chat", n: 1 }],
    ["send", { method: "chat", n: 2 }],
    ["open"]
  ])
})

test("bad frames and shapes are reported through error, never thrown", () => {
  const { synk, events, socket } = setup()
  synk.setSubscription(["k1"])
  socket().open()
  events.length = 0
  assert.doesNotThrow(() => {
    socket().receive("not json{")
    socket().receive("[1, 2]")
    socket().receive("{\"no\": \"method\"}")
    socket().onmessage({ data: new Uint8Array([1]) })
    socket().receive({ method: "add", t: "agent", sKey: "k1", v: 1, state: {} })
    socket().receive({ method: "hello" })
  })
  socket().receive(add("a", 1)) // the connection still works
  assert.deepStrictEqual(events.map(([name, e]) => (name === "error" ? [name, e.code, e.reason] : [name])), [
    ["error", "bad_frame", "frame is not JSON"],
    ["error", "bad_frame", "frame is not an object with a string method"],
    ["error", "bad_frame", "frame is not an object with a string method"],
    ["error", "bad_frame", "binary frame"],
    ["error", "bad_shape", "add without a string id"],
    ["error", "bad_shape", "hello without a string client"],
    ["add"]
  ])
  assert.strictEqual(events[0][1].data, "not json{")
})

test("gateway errors come out as {code, reason}; custom messages via message", () => {
  const { synk, events, socket } = setup()
  socket().open()
  events.length = 0
  socket().receive({ method: "error", code: "forbidden", reason: "no access to k9" })
  socket().receive({ method: "chat", from: "c2", text: "hi" })
  socket().receive({ method: "error", code: "rate_limited" })
  assert.deepStrictEqual(events, [
    ["error", { code: "forbidden", reason: "no access to k9" }],
    ["message", { method: "chat", from: "c2", text: "hi" }],
    ["error", { code: "rate_limited", reason: "" }]
  ])
  assert.throws(() => synk.send("resync", { keys: ["k1"] }), TypeError)
  assert.throws(() => synk.send("", {}), TypeError)
  assert.throws(() => synk.on("mod", () => {}), TypeError)
})

test("an unfilled version gap sends a resync of the key", () => {
  const { synk, events, socket, clock } = setup({ gapTimeout: 300 })
  synk.setSubscription(["k1"])
  socket().open()
  socket().receive(add("a", 1))
  socket().receive({ method: "mod", t: "agent", id: "a", sKey: "k1", v: 3, diff: {} })
  clock.advance(300)
  socket().receive({ ...add("a", 3) })
  socket().receive(snap("k1", ["a"]))
  clock.advance(10_000)
  assert.deepStrictEqual(events, [
    ["connect", "ws://gateway/?synk_resnap=1"],
    ["send", { method: "updateSubscription", add: ["k1"] }],
    ["open"],
    ["add", "a", 1],
    ["send", { method: "resync", keys: ["k1"] }],
    ["mod", "a", 3, "add"]
  ])
})

test("a throwing listener is reported and does not break the socket handler", () => {
  const { synk, events, socket } = setup()
  synk.setSubscription(["k1"])
  synk.on("message", () => { throw new Error("boom") })
  socket().open()
  events.length = 0
  assert.doesNotThrow(() => socket().receive({ method: "chat" }))
  socket().receive(add("a", 1))
  assert.deepStrictEqual(events.map(([name, e]) => (name === "error" ? [name, e.code] : [name])), [
    ["message"],
    ["error", "callback_error"],
    ["add"]
  ])
})

test("an \"error\" listener that throws goes to the console, not back to \"error\"", t => {
  const logged = []
  t.mock.method(console, "error", (...args) => logged.push(args.map(String)))
  const { synk, events, socket } = setup()
  synk.on("error", () => { throw new Error("boom") })
  socket().open()
  socket().receive({ method: "error", code: "forbidden", reason: "no access to k9" })
  socket().receive({ method: "chat" }) // the connection still works
  assert.deepStrictEqual(events, [
    ["connect", "ws://gateway/?synk_resnap=1"],
    ["open"],
    ["error", { code: "forbidden", reason: "no access to k9" }],
    ["message", { method: "chat" }]
  ])
  assert.deepStrictEqual(logged, [["synk-client: an \"error\" listener threw", "Error: boom"]])
})

test("close() stops for good: no reconnect, sends refused, queue reported", () => {
  const { synk, events, socket, sockets, clock } = setup()
  synk.setSubscription(["k1"])
  socket().open()
  socket().receive(add("a", 1))
  socket().drop()
  synk.send("chat", { n: 1 }) // queued for a reconnect that will not happen
  synk.close()
  assert.strictEqual(synk.send("chat", { n: 2 }), false)
  clock.advance(60_000)
  assert.deepStrictEqual(events, [
    ["connect", "ws://gateway/?synk_resnap=1"],
    ["send", { method: "updateSubscription", add: ["k1"] }],
    ["open"],
    ["add", "a", 1],
    socketError, ["close", closeInfo(50)],
    ["error", { code: "queue_dropped", reason: "close() dropped 1 queued messages", count: 1 }],
    ["error", { code: "closed", reason: "\"chat\" dropped: synk was closed", method: "chat" }]
  ])
  assert.strictEqual(clock.pending, 0)
  assert.strictEqual(sockets.length, 1)
  assert.strictEqual(synk.objects.get("a").id, "a", "objects are kept as last seen")
})

test("close() of an open socket closes it with 1000 and emits nothing more", () => {
  const { synk, events, socket } = setup()
  socket().open()
  const ws = socket()
  synk.close()
  synk.close() // idempotent
  assert.strictEqual(ws.onclose, null)
  assert.deepStrictEqual(events, [
    ["connect", "ws://gateway/?synk_resnap=1"],
    ["open"],
    ["socket.close", 1000]
  ])
})

test("a WebSocket constructor that throws is reported, without retry loops", async () => {
  const events = []
  class Refusing {
    constructor() { throw new SyntaxError("bad url") }
  }
  const synk = new Synk("nope", { WebSocket: Refusing, setTimeout: () => assert.fail("no timer") })
  synk.on("error", e => events.push([e.code, e.reason]))
  await Promise.resolve() // the report waits a microtask, for listeners to attach
  assert.strictEqual(synk.send("chat"), false)
  assert.deepStrictEqual(events, [
    ["socket_error", "cannot connect: SyntaxError: bad url"],
    ["closed", "\"chat\" dropped: synk was closed"]
  ])
})

test("the gateway is told this client takes resnap, in the URL's query", async () => {
  const { declaredUrl } = await import("../connection/index.js")
  assert.strictEqual(declaredUrl("ws://g/"), "ws://g/?synk_resnap=1")
  assert.strictEqual(declaredUrl("ws://g/sync?token=a"), "ws://g/sync?token=a&synk_resnap=1")
  assert.strictEqual(declaredUrl("ws://g/?t=1#x"), "ws://g/?t=1&synk_resnap=1#x")
})
