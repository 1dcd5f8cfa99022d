// Unit tests of the mirror: fed messages directly, no socket, no sleeps.
import { test } from "node:test"
import assert from "node:assert"

import { Mirror, isValidKey } from "../index.js"
import { fakeClock } from "./support/fake-clock.js"


/**
 * A mirror subscribed to `keys` that records everything it does in
 * `events`: its events, resync requests, errors, and the calls it makes on
 * instances of the registered "agent" class.
 */
function setup(keys = ["k"]) {
  const events = []
  const clock = fakeClock()
  const mirror = new Mirror({
    gapTimeout: 500,
    setTimeout: clock.setTimeout,
    clearTimeout: clock.clearTimeout,
    onResync: key => events.push(["resync", key]),
    onError: e => events.push(["error", e.code])
  })
  mirror.register("agent", class Agent {
    constructor(id, state, t) {
      this.id = id
      this.state = { ...state }
      events.push(["new", id, t, state])
    }
    update(diff) {
      Object.assign(this.state, diff)
      events.push(["update", this.id, diff])
    }
    teardown() {
      events.push(["teardown", this.id])
    }
  })
  mirror.on("add", (obj, msg) => events.push(["add", msg.id, msg.v]))
  mirror.on("mod", (obj, msg) => events.push(["mod", msg.id, msg.v, msg.method]))
  mirror.on("rem", (obj, cause) => events.push(["rem", obj.id, cause.method]))
  mirror.on("snap", sKey => events.push(["snap", sKey]))
  mirror.setKeys(keys)
  return { mirror, events, clock }
}

const add = (id, v, state = {}, extra = {}) =>
  ({ method: "add", t: "agent", id, sKey: "k", v, state, ...extra })
const mod = (id, v, diff = {}, extra = {}) =>
  ({ method: "mod", t: "agent", id, sKey: "k", v, diff, ...extra })
const plainAdd = (id, v, state = {}, extra = {}) => add(id, v, state, { t: "rock", ...extra })
const plainMod = (id, v, diff = {}, extra = {}) => mod(id, v, diff, { t: "rock", ...extra })

test("versions: next mod applies, stale add/mod are dropped", () => {
  const { mirror, events } = setup()
  mirror.handle(add("a", 1, { x: 0 }))
  mirror.handle(mod("a", 2, { x: 1 }))
  mirror.handle(mod("a", 2, { x: 99 })) // duplicate
  mirror.handle(mod("a", 1, { x: 98 })) // older
  mirror.handle(add("a", 2, { x: 97 })) // not above
  mirror.handle(mod("a", 3, { x: 2 }))
  assert.deepStrictEqual(events, [
    ["new", "a", "agent", { x: 0 }], ["add", "a", 1],
    ["update", "a", { x: 1 }], ["mod", "a", 2, "mod"],
    ["update", "a", { x: 2 }], ["mod", "a", 3, "mod"]
  ])
  assert.deepStrictEqual(mirror.entry("a"), {
    id: "a", t: "agent", sKey: "k", v: 3, obj: mirror.get("a")
  })
  assert.deepStrictEqual(mirror.get("a").state, { x: 2 })
})

test("plain objects: {id, t, sKey, v, state} kept up to date", () => {
  const { mirror, events } = setup()
  const msg = plainAdd("r", 1, { x: 0, y: 0 })
  mirror.handle(msg)
  mirror.handle(plainMod("r", 2, { x: 5 }))
  assert.deepStrictEqual(events, [["add", "r", 1], ["mod", "r", 2, "mod"]])
  assert.deepStrictEqual(mirror.get("r"), { id: "r", t: "rock", sKey: "k", v: 2, state: { x: 5, y: 0 } })
  assert.deepStrictEqual(msg.state, { x: 0, y: 0 }, "the message is not written into")
  assert.deepStrictEqual(mirror.byKey("k"), [mirror.get("r")])
  assert.strictEqual(mirror.size, 1)
})

test("mods ahead of their add or version are held and replayed in order", () => {
  const { mirror, events, clock } = setup()
  mirror.handle(mod("a", 3, { x: 3 }))
  mirror.handle(mod("a", 2, { x: 2 }))
  assert.deepStrictEqual(events, [])
  mirror.handle(add("a", 1, { x: 1 }))
  mirror.handle(mod("a", 5, { x: 5 }))
  mirror.handle(mod("a", 4, { x: 4 }))
  assert.deepStrictEqual(events, [
    ["new", "a", "agent", { x: 1 }], ["add", "a", 1],
    ["update", "a", { x: 2 }], ["mod", "a", 2, "mod"],
    ["update", "a", { x: 3 }], ["mod", "a", 3, "mod"],
    ["update", "a", { x: 4 }], ["mod", "a", 4, "mod"],
    ["update", "a", { x: 5 }], ["mod", "a", 5, "mod"]
  ])
  assert.strictEqual(clock.pending, 0, "no gap timer left once the gaps closed")
  clock.advance(10_000)
  assert.strictEqual(events.length, 10, "and no resync")
})

test("an unfilled gap asks for a resync of the key, then converges", () => {
  const { mirror, events, clock } = setup()
  mirror.handle(add("a", 1, { x: 1 }))
  mirror.handle(mod("a", 3, { x: 3 })) // v2 was lost
  clock.advance(499)
  events.push("--- 499 ms")
  clock.advance(1)
  events.push("--- 500 ms")
  clock.advance(500) // still open: asks again
  events.push("--- resync answer")
  mirror.handle(add("a", 4, { x: 4 })) // the snapshot, newer than the held mod
  mirror.handle({ method: "snap", sKey: "k", ids: ["a"] })
  mirror.handle(mod("a", 3, { x: 3 })) // late duplicate: stale
  mirror.handle(mod("a", 5, { x: 5 }))
  assert.deepStrictEqual(events, [
    ["new", "a", "agent", { x: 1 }], ["add", "a", 1],
    "--- 499 ms",
    ["resync", "k"],
    "--- 500 ms",
    ["resync", "k"],
    "--- resync answer",
    ["update", "a", { x: 4 }], ["mod", "a", 4, "add"],
    ["snap", "k"],
    ["update", "a", { x: 5 }], ["mod", "a", 5, "mod"]
  ])
  assert.strictEqual(clock.pending, 0)
})

test("a key's gap timer runs while any of its objects still has held mods", () => {
  const { mirror, events, clock } = setup()
  mirror.handle(add("a", 1))
  mirror.handle(add("b", 1))
  events.length = 0
  mirror.handle(mod("a", 3)) // held
  mirror.handle(mod("b", 3)) // held
  mirror.handle(mod("b", 4)) // held
  mirror.handle(mod("a", 2)) // a's gap closes; b's is still open
  clock.advance(500)
  events.push("--- 500 ms")
  mirror.handle(mod("b", 2)) // b's closes: nothing held in k any more
  clock.advance(10_000)
  assert.deepStrictEqual(events, [
    ["update", "a", {}], ["mod", "a", 2, "mod"],
    ["update", "a", {}], ["mod", "a", 3, "mod"],
    ["resync", "k"],
    "--- 500 ms",
    ["update", "b", {}], ["mod", "b", 2, "mod"],
    ["update", "b", {}], ["mod", "b", 3, "mod"],
    ["update", "b", {}], ["mod", "b", 4, "mod"]
  ])
  assert.strictEqual(clock.pending, 0)
})

test("held mods of an object the snapshot does not have are dropped at snap", () => {
  const { mirror, events, clock } = setup()
  mirror.handle(mod("ghost", 7))
  clock.advance(500)
  mirror.handle({ method: "snap", sKey: "k", ids: [] })
  clock.advance(10_000)
  mirror.handle(add("ghost", 1)) // a new object reusing the id starts afresh
  assert.deepStrictEqual(events, [
    ["resync", "k"],
    ["snap", "k"],
    ["new", "ghost", "agent", {}], ["add", "ghost", 1]
  ])
  assert.strictEqual(clock.pending, 0)
})

test("moves: to a subscribed key in place, to another key removes", () => {
  const { mirror, events } = setup(["k", "k2"])
  mirror.handle(add("a", 1))
  mirror.handle(add("b", 1))
  mirror.handle(mod("a", 2, { x: 1 }, { nsKey: "k2" }))
  mirror.handle(mod("b", 2, { x: 1 }, { nsKey: "far" }))
  mirror.handle(mod("b", 3, {}, { sKey: "far" })) // not subscribed: dropped
  assert.deepStrictEqual(events, [
    ["new", "a", "agent", {}], ["add", "a", 1],
    ["new", "b", "agent", {}], ["add", "b", 1],
    ["update", "a", { x: 1 }], ["mod", "a", 2, "mod"],
    ["rem", "b", "mod"], ["teardown", "b"]
  ])
  assert.strictEqual(mirror.entry("a").sKey, "k2")
  assert.deepStrictEqual(mirror.byKey("k"), [])
  assert.deepStrictEqual(mirror.byKey("k2"), [mirror.get("a")])
  assert.strictEqual(mirror.has("b"), false)
})

test("moves: add with psKey of a mirrored object is a version update, not a new object", () => {
  const { mirror, events } = setup(["k", "k2"])
  mirror.handle(add("a", 1, { x: 0 }))
  mirror.handle(mod("a", 2, { x: 1 }, { nsKey: "k2" }))
  // Both keys subscribed: the add with psKey is redundant.
  mirror.handle(add("a", 2, { x: 1 }, { sKey: "k2", psKey: "k" }))
  // Newer (e.g. the mod was filtered): updates in place.
  mirror.handle(add("a", 3, { x: 2 }, { sKey: "k2", psKey: "k" }))
  assert.deepStrictEqual(events, [
    ["new", "a", "agent", { x: 0 }], ["add", "a", 1],
    ["update", "a", { x: 1 }], ["mod", "a", 2, "mod"],
    ["update", "a", { x: 2 }], ["mod", "a", 3, "add"]
  ])
  assert.strictEqual(mirror.entry("a").sKey, "k2")
})

test("add at a higher version updates in place with the full state", () => {
  const { mirror, events } = setup()
  mirror.handle(add("a", 1, { x: 0, y: 0 }))
  const agent = mirror.get("a")
  mirror.handle(add("a", 5, { x: 9, y: 0 }))
  mirror.handle(plainAdd("r", 1, { x: 0, gone: true }))
  const rock = mirror.get("r")
  const rockState = rock.state
  mirror.handle(plainAdd("r", 4, { x: 3 }))
  assert.deepStrictEqual(events, [
    ["new", "a", "agent", { x: 0, y: 0 }], ["add", "a", 1],
    ["update", "a", { x: 9, y: 0 }], ["mod", "a", 5, "add"],
    ["add", "r", 1],
    ["mod", "r", 4, "add"]
  ])
  assert.strictEqual(mirror.get("a"), agent, "same instance")
  assert.strictEqual(mirror.get("r"), rock, "same plain object")
  assert.strictEqual(rock.state, rockState, "same state object")
  assert.deepStrictEqual(rock, { id: "r", t: "rock", sKey: "k", v: 4, state: { x: 3 } })
})

test("incarnations: an add of another incarnation replaces in place whatever its version", () => {
  const { mirror, events } = setup()
  mirror.handle(add("a", 1, { x: 0, y: 0 }, { i: "A" }))
  mirror.handle(mod("a", 2, { x: 1 }))
  mirror.handle(mod("a", 3, { x: 2 }))
  const agent = mirror.get("a")
  events.push("--- re-created (or store reset): versions start again")
  mirror.handle(add("a", 1, { x: 7, y: 7 }, { i: "B" }))
  mirror.handle(mod("a", 2, { x: 8 })) // the new incarnation's next version
  mirror.handle(add("a", 2, { x: 8, y: 7 }, { i: "B" })) // not above: stale
  mirror.handle(mod("a", 2, { x: 99 })) // duplicate: stale
  events.push("--- same version, other incarnation")
  mirror.handle(add("a", 2, { x: 5, y: 5 }, { i: "C" }))
  assert.deepStrictEqual(events, [
    ["new", "a", "agent", { x: 0, y: 0 }], ["add", "a", 1],
    ["update", "a", { x: 1 }], ["mod", "a", 2, "mod"],
    ["update", "a", { x: 2 }], ["mod", "a", 3, "mod"],
    "--- re-created (or store reset): versions start again",
    ["update", "a", { x: 7, y: 7 }], ["mod", "a", 1, "add"],
    ["update", "a", { x: 8 }], ["mod", "a", 2, "mod"],
    "--- same version, other incarnation",
    ["update", "a", { x: 5, y: 5 }], ["mod", "a", 2, "add"]
  ])
  assert.strictEqual(mirror.get("a"), agent, "same instance: no teardown, no re-create")
  assert.deepStrictEqual(mirror.entry("a"), { id: "a", t: "agent", sKey: "k", v: 2, i: "C", obj: agent })
  assert.deepStrictEqual(agent.state, { x: 5, y: 5 })
})

test("incarnations: plain objects get the new state in place, and its key", () => {
  const { mirror, events } = setup(["k", "k2"])
  mirror.handle(plainAdd("r", 1, { x: 0, gone: true }, { i: "A" }))
  mirror.handle(plainMod("r", 2, { x: 1 }))
  const rock = mirror.get("r")
  const state = rock.state
  mirror.handle(plainAdd("r", 1, { x: 3 }, { i: "B", sKey: "k2" }))
  assert.deepStrictEqual(events, [
    ["add", "r", 1],
    ["mod", "r", 2, "mod"],
    ["mod", "r", 1, "add"]
  ])
  assert.strictEqual(mirror.get("r"), rock, "same plain object")
  assert.strictEqual(rock.state, state, "same state object")
  assert.deepStrictEqual(rock, { id: "r", t: "rock", sKey: "k2", v: 1, state: { x: 3 } })
  assert.strictEqual(mirror.entry("r").i, "B")
  assert.deepStrictEqual(mirror.byKey("k"), [])
  assert.deepStrictEqual(mirror.byKey("k2"), [rock])
})

test("incarnations: held mods of the old incarnation are dropped, never applied", () => {
  const { mirror, events, clock } = setup()
  mirror.handle(add("a", 1, { x: 1 }, { i: "A" }))
  mirror.handle(mod("a", 3, { x: 3 })) // held: v2 of A is missing
  mirror.handle(mod("a", 4, { x: 4 })) // held
  events.push("--- reset; B arrives at v2")
  mirror.handle(add("a", 2, { x: 20 }, { i: "B" }))
  assert.strictEqual(clock.pending, 0, "nothing held any more: no gap timer")
  mirror.handle(mod("a", 3, { x: 30 })) // B's v3, applied (not A's)
  clock.advance(10_000)
  mirror.handle(mod("a", 4, { x: 40 })) // B's v4: only now, not A's held one
  assert.deepStrictEqual(events, [
    ["new", "a", "agent", { x: 1 }], ["add", "a", 1],
    "--- reset; B arrives at v2",
    ["update", "a", { x: 20 }], ["mod", "a", 2, "add"],
    ["update", "a", { x: 30 }], ["mod", "a", 3, "mod"],
    ["update", "a", { x: 40 }], ["mod", "a", 4, "mod"]
  ])
  assert.deepStrictEqual(mirror.get("a").state, { x: 40 })
})

test("incarnations: held mods of other objects and keys are kept", () => {
  const { mirror, events, clock } = setup()
  mirror.handle(add("a", 1, {}, { i: "A" }))
  mirror.handle(add("b", 1, {}, { i: "A" }))
  mirror.handle(mod("b", 3, { x: 3 })) // held for b
  mirror.handle(add("a", 1, { x: 0 }, { i: "B" })) // a re-created: b's held mod stays
  mirror.handle(mod("b", 2, { x: 2 })) // fills b's gap
  clock.advance(10_000)
  assert.deepStrictEqual(events, [
    ["new", "a", "agent", {}], ["add", "a", 1],
    ["new", "b", "agent", {}], ["add", "b", 1],
    ["update", "a", { x: 0 }], ["mod", "a", 1, "add"],
    ["update", "b", { x: 2 }], ["mod", "b", 2, "mod"],
    ["update", "b", { x: 3 }], ["mod", "b", 3, "mod"]
  ])
  assert.strictEqual(clock.pending, 0)
})

test("incarnations: adds without i (older servers) are ordered by version alone", () => {
  const { mirror, events } = setup()
  mirror.handle(add("a", 1, { x: 1 })) // no i: none known
  mirror.handle(add("a", 1, { x: 9 }, { i: "B" })) // i, but none to compare with: stale
  mirror.handle(add("a", 2, { x: 2 }, { i: "B" })) // newer: taken, and its i with it
  mirror.handle(add("a", 2, { x: 9 })) // no i: versions decide, stale
  mirror.handle(add("a", 3, { x: 3 })) // no i, newer: taken, i stays "B"
  mirror.handle(add("a", 3, { x: 4 }, { i: "C" })) // another incarnation than "B"
  assert.deepStrictEqual(events, [
    ["new", "a", "agent", { x: 1 }], ["add", "a", 1],
    ["update", "a", { x: 2 }], ["mod", "a", 2, "add"],
    ["update", "a", { x: 3 }], ["mod", "a", 3, "add"],
    ["update", "a", { x: 4 }], ["mod", "a", 3, "add"]
  ])
  assert.deepStrictEqual(mirror.entry("a"), { id: "a", t: "agent", sKey: "k", v: 3, i: "C", obj: mirror.get("a") })
  mirror.handle(add("n", 1))
  assert.strictEqual("i" in mirror.entry("n"), false, "no i when no add named one")
})

test("incarnations: a rem then an add of the same id is a new object, as before", () => {
  const { mirror, events } = setup()
  mirror.handle(add("a", 4, { x: 4 }, { i: "A" }))
  const first = mirror.get("a")
  mirror.handle({ method: "rem", t: "agent", id: "a", sKey: "k" })
  mirror.handle(add("a", 1, { x: 1 }, { i: "B" }))
  assert.deepStrictEqual(events, [
    ["new", "a", "agent", { x: 4 }], ["add", "a", 4],
    ["rem", "a", "rem"], ["teardown", "a"],
    ["new", "a", "agent", { x: 1 }], ["add", "a", 1]
  ])
  assert.notStrictEqual(mirror.get("a"), first)
  assert.strictEqual(mirror.entry("a").i, "B")
})

test("snap removes the key's objects it does not list, and only those", () => {
  const { mirror, events } = setup(["k", "k2"])
  mirror.handle(add("a", 1))
  mirror.handle(add("b", 1))
  mirror.handle(add("c", 1, {}, { sKey: "k2" }))
  mirror.handle({ method: "snap", sKey: "k", ids: ["a", "new"] })
  mirror.handle({ method: "snap", sKey: "k", ids: ["a"] })
  assert.deepStrictEqual(events, [
    ["new", "a", "agent", {}], ["add", "a", 1],
    ["new", "b", "agent", {}], ["add", "b", 1],
    ["new", "c", "agent", {}], ["add", "c", 1],
    ["rem", "b", "snap"], ["teardown", "b"], ["snap", "k"],
    ["snap", "k"]
  ])
  assert.deepStrictEqual(mirror.byKey("k").map(o => o.id), ["a"])
  assert.deepStrictEqual(mirror.byKey("k2").map(o => o.id), ["c"])
})

test("unsubscribing removes the key's objects once; its messages are dropped", () => {
  const { mirror, events, clock } = setup(["k", "k2"])
  mirror.handle(add("a", 1))
  mirror.handle(add("b", 1))
  mirror.handle(add("c", 1, {}, { sKey: "k2" }))
  mirror.handle(mod("d", 4)) // held, with a gap timer on "k"
  assert.deepStrictEqual(mirror.setKeys(["k2", "k3"]), { add: ["k3"], remove: ["k"] })
  events.push("--- unsubscribed")
  assert.deepStrictEqual(mirror.setKeys(["k2", "k3"]), { add: [], remove: [] })
  mirror.handle(add("e", 1))
  mirror.handle(mod("a", 2))
  mirror.handle({ method: "rem", t: "agent", id: "a", sKey: "k" })
  mirror.handle({ method: "snap", sKey: "k", ids: [] })
  clock.advance(10_000)
  assert.deepStrictEqual(events, [
    ["new", "a", "agent", {}], ["add", "a", 1],
    ["new", "b", "agent", {}], ["add", "b", 1],
    ["new", "c", "agent", {}], ["add", "c", 1],
    ["rem", "a", "unsubscribe"], ["teardown", "a"],
    ["rem", "b", "unsubscribe"], ["teardown", "b"],
    "--- unsubscribed"
  ])
  assert.deepStrictEqual(mirror.keys(), ["k2", "k3"])
  assert.strictEqual(mirror.size, 1)
  assert.strictEqual(clock.pending, 0)
})

test("reconnect: an object that moved between two followed keys is moved in place, whatever the snap order", () => {
  const { mirror, events, clock } = setup(["k", "k2"])
  const moves = []
  mirror.on("mod", (obj, msg) => moves.push([msg.id, msg.sKey, mirror.entry(msg.id).sKey]))
  mirror.handle(add("a", 1, { x: 0 }))
  mirror.handle(add("b", 1))
  mirror.handle(add("c", 1, {}, { sKey: "k2" }))
  const a = mirror.get("a")
  events.length = 0

  // Disconnected; "a" moved from k to k2 meanwhile. On the reconnect both
  // keys are snapshotted again, k's first.
  mirror.resetPending()
  mirror.expectSnaps(["k", "k2"])
  mirror.handle(add("b", 1)) // unchanged: stale
  mirror.handle({ method: "snap", sKey: "k", ids: ["b"] })
  events.push("--- k's snap: a waits for k2's")
  mirror.handle(add("a", 2, { x: 5 }, { sKey: "k2" }))
  mirror.handle(add("c", 1, {}, { sKey: "k2" })) // stale
  mirror.handle({ method: "snap", sKey: "k2", ids: ["a", "c"] })
  clock.advance(10_000)
  assert.deepStrictEqual(events, [
    ["snap", "k"],
    "--- k's snap: a waits for k2's",
    ["update", "a", { x: 5 }], ["mod", "a", 2, "add"],
    ["snap", "k2"]
  ])
  assert.deepStrictEqual(moves, [["a", "k2", "k2"]], "one mod, with the new sKey")
  assert.strictEqual(mirror.get("a"), a, "same instance: no teardown, no re-create")
  assert.deepStrictEqual(mirror.entry("a"), { id: "a", t: "agent", sKey: "k2", v: 2, obj: a })
  assert.deepStrictEqual(mirror.byKey("k").map(o => o.id), ["b"])
  assert.deepStrictEqual(mirror.byKey("k2").map(o => o.id), ["c", "a"])
  assert.strictEqual(clock.pending, 0, "no snap timer left")
})

test("reconnect: an object gone from every key is removed once all the snaps are in", () => {
  const { mirror, events, clock } = setup(["k", "k2"])
  mirror.handle(add("a", 1))
  mirror.handle(add("b", 1))
  mirror.handle(add("c", 1, {}, { sKey: "k2" }))
  mirror.handle(plainAdd("r", 1, {}, { sKey: "k2" }))
  events.length = 0

  // Deleted meanwhile: "b" (in k) and "r" (in k2).
  mirror.resetPending()
  mirror.expectSnaps(["k", "k2"])
  mirror.handle({ method: "snap", sKey: "k", ids: ["a"] })
  events.push("--- k's snap")
  assert.strictEqual(mirror.has("b"), true, "still mirrored: k2 might have it")
  mirror.handle({ method: "snap", sKey: "k2", ids: ["c"] })
  clock.advance(10_000)
  assert.deepStrictEqual(events, [
    ["snap", "k"],
    "--- k's snap",
    ["rem", "b", "snap"], ["teardown", "b"],
    ["rem", "r", "snap"],
    ["snap", "k2"]
  ])
  assert.deepStrictEqual([...mirror.keys()].map(k => mirror.byKey(k).map(o => o.id)), [["a"], ["c"]])
  assert.strictEqual(clock.pending, 0)
})

test("a key whose snap never comes: the waiting removals happen after snapTimeout", () => {
  const { mirror, events, clock } = setup(["k", "k2"])
  mirror.handle(add("a", 1))
  mirror.handle(add("b", 1))
  events.length = 0

  mirror.expectSnaps(["k", "k2"]) // k2's snapshot never comes (refused, say)
  clock.advance(1000)
  mirror.handle({ method: "snap", sKey: "k", ids: ["a"] })
  clock.advance(3999)
  events.push("--- 4999 ms")
  clock.advance(1)
  events.push("--- 5000 ms: given up on k2")
  mirror.handle(add("c", 1))
  mirror.handle({ method: "snap", sKey: "k", ids: ["a"] }) // unrequested: decides at once
  assert.deepStrictEqual(events, [
    ["snap", "k"],
    "--- 4999 ms",
    ["rem", "b", "snap"], ["teardown", "b"],
    "--- 5000 ms: given up on k2",
    ["new", "c", "agent", {}], ["add", "c", 1],
    ["rem", "c", "snap"], ["teardown", "c"],
    ["snap", "k"]
  ])
  assert.strictEqual(clock.pending, 0)
})

test("the snap timer counts from the first request: later requests do not restart it", () => {
  const { mirror, events, clock } = setup(["k", "k2", "k3"])
  mirror.handle(add("a", 1))
  events.length = 0

  mirror.expectSnaps(["k", "k2"]) // k2's snapshot never comes
  mirror.handle({ method: "snap", sKey: "k", ids: [] }) // a waits
  clock.advance(3000)
  mirror.expectSnaps(["k3"]) // a resync of k3, say: its snap never comes either
  clock.advance(1999)
  events.push("--- 4999 ms")
  clock.advance(1)
  events.push("--- 5000 ms")
  assert.deepStrictEqual(events, [
    ["snap", "k"],
    "--- 4999 ms",
    ["rem", "a", "snap"], ["teardown", "a"],
    "--- 5000 ms"
  ])
  assert.strictEqual(clock.pending, 0)
})

test("a removal that waited for the snaps drops the object's held mods with it", () => {
  const { mirror, events, clock } = setup(["k", "k2"])
  mirror.handle(add("a", 1))
  events.length = 0

  mirror.expectSnaps(["k", "k2"])
  mirror.handle({ method: "snap", sKey: "k", ids: [] }) // a waits for k2's
  mirror.handle(mod("a", 3, { x: 3 })) // held: v2 is missing
  mirror.handle({ method: "snap", sKey: "k2", ids: [] }) // a is gone
  clock.advance(10_000) // no gap left to resync
  mirror.handle(add("a", 2, { x: 2 })) // the id anew: the old held v3 is not its v3
  assert.deepStrictEqual(events, [
    ["snap", "k"],
    ["rem", "a", "snap"], ["teardown", "a"],
    ["snap", "k2"],
    ["new", "a", "agent", { x: 2 }], ["add", "a", 2]
  ])
  assert.strictEqual(clock.pending, 0)
})

test("waiting removals: a live move keeps the object; rem and unsubscribe stay immediate", () => {
  const { mirror, events, clock } = setup(["k", "k2", "k3"])
  for (const id of ["a", "b", "d"]) mirror.handle(add(id, 1))
  mirror.handle(add("e", 1, {}, { sKey: "k3" }))
  events.length = 0

  mirror.expectSnaps(["k", "k2", "k3", "not-followed"])
  mirror.handle({ method: "snap", sKey: "k", ids: [] }) // a, b and d wait
  mirror.handle(mod("a", 2, {}, { nsKey: "k2" })) // a live move to a followed key: kept
  mirror.handle({ method: "rem", t: "agent", id: "b", sKey: "k" }) // explicit delete: at once
  events.push("--- k3 unsubscribed")
  mirror.setKeys(["k", "k2"]) // at once; k2's snap is still awaited
  events.push("--- k2's snap")
  mirror.handle({ method: "snap", sKey: "k2", ids: ["a"] })
  assert.deepStrictEqual(events, [
    ["snap", "k"],
    ["update", "a", {}], ["mod", "a", 2, "mod"],
    ["rem", "b", "rem"], ["teardown", "b"],
    "--- k3 unsubscribed",
    ["rem", "e", "unsubscribe"], ["teardown", "e"],
    "--- k2's snap",
    ["rem", "d", "snap"], ["teardown", "d"],
    ["snap", "k2"]
  ])
  assert.strictEqual(mirror.entry("a").sKey, "k2")
  assert.strictEqual(clock.pending, 0)
})

test("waiting removals: unsubscribing the last awaited key settles them; resetPending keeps them", () => {
  const { mirror, events, clock } = setup(["k", "k2"])
  mirror.handle(add("a", 1))
  mirror.handle(add("b", 1))
  events.length = 0

  mirror.expectSnaps(["k", "k2"])
  mirror.handle({ method: "snap", sKey: "k", ids: ["b"] }) // a waits for k2's
  events.push("--- connection lost")
  mirror.resetPending() // the snap of k2 will not come: a stays, as last seen
  clock.advance(10_000)
  events.push("--- reconnected")
  mirror.expectSnaps(["k", "k2"])
  mirror.handle({ method: "snap", sKey: "k", ids: ["b"] }) // a waits again
  events.push("--- k2 unsubscribed")
  mirror.setKeys(["k"]) // nothing left to wait for: a could only have moved to k2
  assert.deepStrictEqual(events, [
    ["snap", "k"],
    "--- connection lost",
    "--- reconnected",
    ["snap", "k"],
    "--- k2 unsubscribed",
    ["rem", "a", "snap"], ["teardown", "a"]
  ])
  assert.strictEqual(clock.pending, 0)
  assert.throws(() => mirror.expectSnaps("k"), TypeError)
})

test("rem removes and tears down once", () => {
  const { mirror, events } = setup()
  mirror.handle(add("a", 1))
  mirror.handle(mod("a", 3)) // held
  const rem = { method: "rem", id: "a", sKey: "k" } // t is optional
  mirror.handle(rem)
  mirror.handle(rem)
  mirror.handle({ method: "rem", t: "agent", id: "nobody", sKey: "k" })
  assert.deepStrictEqual(events, [
    ["new", "a", "agent", {}], ["add", "a", 1],
    ["rem", "a", "rem"], ["teardown", "a"]
  ])
  assert.strictEqual(mirror.get("a"), undefined)
})

test("malformed messages are reported and dropped, never thrown", () => {
  const { mirror, events } = setup()
  const bad = [
    { method: "add", t: "agent", sKey: "k", v: 1, state: {} }, // no id
    { method: "add", t: "agent", id: "a", sKey: "k", v: 1.5, state: {} },
    { method: "add", t: "agent", id: "a", sKey: "k", v: "1", state: {} },
    { method: "add", t: "agent", id: "a", sKey: "k", v: 1, state: [] },
    { method: "add", id: "a", sKey: "k", v: 1, state: {} }, // no t
    { method: "add", t: "agent", id: "a", sKey: "k", v: 1, state: {}, i: 7 },
    { method: "add", t: "agent", id: "a", sKey: "k", v: 1, state: {}, psKey: 7 },
    { method: "mod", t: "agent", id: "a", sKey: "k", v: 2 }, // no diff
    { method: "mod", t: "agent", id: "a", sKey: "k", v: 2, diff: {}, nsKey: 3 },
    { method: "rem", t: "agent", id: 5, sKey: "k" },
    { method: "rem", t: 5, id: "a", sKey: "k" },
    { method: "snap", sKey: "k", ids: "a" },
    { method: "snap", ids: [] }
  ]
  for (const msg of bad) assert.strictEqual(mirror.handle(msg), true)
  assert.strictEqual(mirror.handle({ method: "chat" }), false, "not an object message")
  assert.strictEqual(mirror.handle(null), false)
  assert.deepStrictEqual(events, bad.map(() => ["error", "bad_shape"]))
  assert.strictEqual(mirror.size, 0)
})

test("throwing classes and listeners are reported; bookkeeping carries on", () => {
  const { mirror, events } = setup()
  mirror.register("bomb", class {
    constructor() { throw new Error("no") }
  })
  mirror.register("fragile", class {
    constructor(id) { this.id = id }
    update() { throw new Error("no") }
    teardown() { throw new Error("no") }
  })
  const off = mirror.on("add", () => { throw new Error("listener") })
  mirror.handle(add("x", 1, {}, { t: "bomb" }))
  mirror.handle(add("f", 1, {}, { t: "fragile" }))
  off()
  mirror.handle(mod("f", 2, {}, { t: "fragile" }))
  mirror.handle({ method: "rem", t: "fragile", id: "f", sKey: "k" })
  assert.deepStrictEqual(events, [
    ["error", "callback_error"], // constructor: not mirrored
    ["add", "f", 1], ["error", "callback_error"], // listener
    ["error", "callback_error"], ["mod", "f", 2, "mod"], // update
    ["rem", "f", "rem"], ["error", "callback_error"] // teardown
  ])
  assert.strictEqual(mirror.size, 0)
})

test("keys are validated; on() rejects unknown events; off() unsubscribes", () => {
  const { mirror, events } = setup()
  assert.throws(() => mirror.setKeys(["ok", "bad key"]), TypeError)
  assert.throws(() => mirror.setKeys("k"), TypeError)
  assert.throws(() => mirror.setKeys(["x".repeat(201)]), TypeError)
  assert.deepStrictEqual(mirror.keys(), ["k"], "unchanged after a refused set")
  assert.throws(() => mirror.on("open", () => {}), TypeError)
  assert.strictEqual(isValidKey("world:0|0"), true)
  assert.strictEqual(isValidKey("A-z_.:|/@#+=,~-09"), true)
  assert.strictEqual(isValidKey(""), false)

  const seen = []
  const off = mirror.on("add", obj => seen.push(obj.id))
  mirror.handle(add("a", 1))
  off()
  mirror.handle(add("b", 1))
  assert.deepStrictEqual(seen, ["a"])
  assert.deepStrictEqual(events, [
    ["new", "a", "agent", {}], ["add", "a", 1],
    ["new", "b", "agent", {}], ["add", "b", 1]
  ])
})

test("a slower snapshot read before an object moved A → B → C does not bring it back", () => {
  // Following B, then A is added; A's snapshot is slow. X moves A → B → C
  // meanwhile (C not followed): B's live messages come first, then A's
  // older snapshot and its replayed buffer.
  const { mirror, events, clock } = setup(["B"])
  mirror.setKeys(["B", "A"])
  mirror.expectSnaps(["A"])
  const x = { t: "agent", id: "x", i: "I" }
  mirror.handle({ method: "add", ...x, sKey: "B", psKey: "A", v: 2, state: { at: "B" } })
  mirror.handle({ method: "mod", ...x, sKey: "B", nsKey: "C", v: 3, diff: { at: "C" } })
  events.push("--- A's snapshot")
  mirror.handle({ method: "add", ...x, sKey: "A", v: 1, state: { at: "A" } })
  mirror.handle({ method: "snap", sKey: "A", ids: ["x"] })
  mirror.handle({ method: "mod", ...x, sKey: "A", nsKey: "B", v: 2, diff: { at: "B" } })
  clock.advance(10_000)
  assert.deepStrictEqual(events, [
    ["new", "x", "agent", { at: "B" }], ["add", "x", 2],
    ["rem", "x", "mod"], ["teardown", "x"],
    "--- A's snapshot",
    ["snap", "A"]
  ])
  assert.strictEqual(mirror.has("x"), false)
  assert.strictEqual(clock.pending, 0, "nothing held, no resync")
})

test("a departed object comes back at its departure version or a later one", () => {
  const { mirror, events } = setup(["B"])
  const x = { t: "agent", id: "x", i: "I" }
  mirror.handle({ method: "add", ...x, sKey: "B", v: 2, state: {} })
  mirror.handle({ method: "mod", ...x, sKey: "B", nsKey: "C", v: 3, diff: {} })
  mirror.setKeys(["B", "C"])
  mirror.handle({ method: "add", ...x, sKey: "C", v: 3, state: { c: 1 } }) // C's snapshot: it is there
  mirror.handle({ method: "rem", ...x, sKey: "C" })
  mirror.handle({ method: "add", ...x, sKey: "C", v: 4, state: {} }) // that incarnation is over
  mirror.handle({ method: "add", ...x, i: "J", sKey: "C", v: 1, state: { new: 1 } }) // a new one
  assert.deepStrictEqual(events, [
    ["new", "x", "agent", {}], ["add", "x", 2],
    ["rem", "x", "mod"], ["teardown", "x"],
    ["new", "x", "agent", { c: 1 }], ["add", "x", 3],
    ["rem", "x", "rem"], ["teardown", "x"],
    ["new", "x", "agent", { new: 1 }], ["add", "x", 1]
  ])
})

test("rem: a late rem of another incarnation or key leaves the mirrored object", () => {
  const { mirror, events } = setup(["k", "k2"])
  mirror.handle(add("a", 4, { x: 4 }, { i: "A" }))
  mirror.handle({ method: "rem", t: "agent", id: "a", sKey: "k", i: "A" })
  mirror.handle(add("a", 1, { x: 1 }, { i: "B" }))
  mirror.handle(mod("a", 3, {}, { i: "B" })) // held: v2 not here yet
  events.push("--- late rems")
  mirror.handle({ method: "rem", t: "agent", id: "a", sKey: "k", i: "A" }) // the old incarnation's, again
  mirror.handle({ method: "rem", t: "agent", id: "a", sKey: "k2", i: "B" }) // a key it is not in
  events.push("--- its own")
  mirror.handle(mod("a", 2, { x: 2 }, { i: "B" }))
  mirror.handle({ method: "rem", t: "agent", id: "a", sKey: "k", i: "B" })
  assert.deepStrictEqual(events, [
    ["new", "a", "agent", { x: 4 }], ["add", "a", 4],
    ["rem", "a", "rem"], ["teardown", "a"],
    ["new", "a", "agent", { x: 1 }], ["add", "a", 1],
    "--- late rems",
    "--- its own",
    ["update", "a", { x: 2 }], ["mod", "a", 2, "mod"],
    ["update", "a", {}], ["mod", "a", 3, "mod"],
    ["rem", "a", "rem"], ["teardown", "a"]
  ])
  assert.strictEqual(mirror.has("a"), false)
})

test("reading: every object, one key's, one by id, the subscribed keys", () => {
  const { mirror } = setup(["k", "k2"])
  mirror.handle(add("a", 1, { x: 0 }))
  mirror.handle(plainAdd("r", 1, { x: 1 }))
  mirror.handle(add("b", 1, { x: 2 }, { sKey: "k2" }))
  const [a, r, b] = ["a", "r", "b"].map(id => mirror.byId(id))
  assert.deepStrictEqual(mirror.all(), [a, r, b], "every object, in the order they came")
  assert.deepStrictEqual([...mirror], [a, r, b], "iterating the mirror iterates its objects")
  assert.deepStrictEqual(mirror.ids(), ["a", "r", "b"])
  assert.deepStrictEqual(mirror.ids("k2"), ["b"])
  assert.deepStrictEqual(mirror.ids("nope"), [])
  assert.deepStrictEqual(mirror.byKey("k"), [a, r])
  assert.deepStrictEqual(mirror.byKey("k2"), [b])
  assert.deepStrictEqual(mirror.byKey("nope"), [])
  assert.strictEqual(mirror.byId("nope"), undefined)
  assert.deepStrictEqual(mirror.subscribedKeys(), ["k", "k2"])
  // The names the client always had.
  assert.strictEqual(mirror.get("a"), a)
  assert.deepStrictEqual(mirror.keys(), ["k", "k2"], "keys() stays the subscribed keys")
  assert.strictEqual(mirror.size, 3)
  // Iterating while objects leave visits what was there when it began.
  const seen = []
  for (const obj of mirror) {
    seen.push(obj.id)
    mirror.handle({ method: "rem", t: "agent", id: "b", sKey: "k2" })
  }
  assert.deepStrictEqual(seen, ["a", "r", "b"])
  assert.deepStrictEqual(mirror.ids(), ["a", "r"])
})

test("views: immutable, the same until the object changes, for instances and plain objects", () => {
  const { mirror } = setup(["k", "k2"])
  mirror.handle(add("a", 1, { x: 0, y: 0 }, { i: "i1" }))
  mirror.handle(plainAdd("r", 1, { x: 1 }))
  const a1 = mirror.view("a")
  assert.deepStrictEqual(a1, { id: "a", t: "agent", sKey: "k", v: 1, i: "i1", state: { x: 0, y: 0 }, obj: mirror.get("a") })
  assert.ok(Object.isFrozen(a1) && Object.isFrozen(a1.state))
  assert.strictEqual(mirror.view("a"), a1, "cached while nothing changes")
  const r1 = mirror.view("r")
  assert.deepStrictEqual(r1, { id: "r", t: "rock", sKey: "k", v: 1, state: { x: 1 }, obj: mirror.get("r") })
  assert.notStrictEqual(r1.state, mirror.get("r").state, "a copy, not the live state")

  mirror.handle(mod("a", 2, { x: 5 }))
  const a2 = mirror.view("a")
  assert.notStrictEqual(a2, a1)
  assert.deepStrictEqual([a1.state, a2.state, a2.v], [{ x: 0, y: 0 }, { x: 5, y: 0 }, 2], "the old view kept its state")
  assert.strictEqual(mirror.view("r"), r1, "another object's view is untouched")

  mirror.handle(mod("a", 3, {}, { nsKey: "k2" }))
  assert.deepStrictEqual([mirror.view("a").sKey, mirror.view("a").v], ["k2", 3], "a move is a change")
  mirror.handle(add("a", 1, { z: 1 }, { sKey: "k2", i: "i2" }))
  assert.deepStrictEqual(mirror.view("a").state, { z: 1 }, "a new incarnation replaces the state")
  assert.strictEqual(mirror.view("a").i, "i2")
  mirror.handle(plainMod("r", 2, { x: 2 }))
  assert.deepStrictEqual(mirror.view("r").state, { x: 2 })
  mirror.handle({ method: "rem", id: "r", sKey: "k" })
  assert.strictEqual(mirror.view("r"), undefined)
})
