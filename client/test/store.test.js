// The stores over a mirror fed messages directly: values, identities, and
// who is told what, recorded as whole sequences.
import { test } from "node:test"
import assert from "node:assert/strict"

import { Mirror } from "../index.js"
import { objectsStore, objectStore, holdKeys } from "../store/index.js"

const add = (id, v, state = {}, extra = {}) => ({ method: "add", t: "agent", id, sKey: "k", v, state, ...extra })
const mod = (id, v, diff = {}, extra = {}) => ({ method: "mod", t: "agent", id, sKey: "k", v, diff, ...extra })
const rem = (id, sKey = "k") => ({ method: "rem", t: "agent", id, sKey })

function setup() {
  const mirror = new Mirror({ onError: e => { throw new Error(e.reason) } })
  mirror.register("agent", class Agent {
    constructor(id, state) { this.name = id; this.x = state.x } // no id field: the store must not need one
    update(diff) { if ("x" in diff) this.x = diff.x }
  })
  mirror.setKeys(["k", "k2"])
  return mirror
}

/** Short form of a store value for the events array: ids with x and v. */
const short = value => value === undefined ? undefined
  : Array.isArray(value) ? value.map(v => `${v.id}:${v.state.x}@${v.v}`) : `${value.id}:${value.state.x}@${value.v}`

test("objectsStore(key): subscribe gets the value now and on every change of the key's objects, and only then", () => {
  const mirror = setup()
  mirror.handle(add("a", 1, { x: 0 }))
  const store = objectsStore(mirror, "k")
  const events = []
  const off = store.subscribe(value => events.push(short(value)))
  mirror.handle(add("b", 1, { x: 1 }))
  mirror.handle(add("c", 1, { x: 2 }, { sKey: "k2" })) // another key: no call
  mirror.handle(mod("a", 2, { x: 5 }))
  mirror.handle(mod("c", 2, { x: 6 }, { sKey: "k2" })) // another key: no call
  mirror.handle(mod("b", 2, {}, { nsKey: "k2" })) // moves out
  mirror.handle(mod("c", 3, {}, { sKey: "k2", nsKey: "k" })) // moves in
  mirror.handle(rem("a"))
  off()
  mirror.handle(add("d", 1, { x: 9 })) // unsubscribed: no call
  assert.deepEqual(events, [
    ["a:0@1"],
    ["a:0@1", "b:1@1"],
    ["a:5@2", "b:1@1"],
    ["a:5@2"],
    ["a:5@2", "c:6@3"],
    ["c:6@3"]
  ])
  assert.deepEqual(short(store.get()), ["c:6@3", "d:9@1"], "get() reads the mirror when nobody listens")
})

test("objectsStore: values and unchanged objects' views keep their identity", () => {
  const mirror = setup()
  mirror.handle(add("a", 1, { x: 0 }))
  mirror.handle(add("b", 1, { x: 1 }))
  const store = objectsStore(mirror, "k")
  const first = store.get()
  assert.equal(store.get(), first, "the same array while nothing changed (not listened)")
  assert.ok(Object.isFrozen(first))
  const values = []
  const off = store.listen(value => values.push(value))
  assert.equal(store.get(), first, "and once listened")
  mirror.handle(mod("b", 2, { x: 7 }))
  assert.equal(values.length, 1)
  assert.notEqual(values[0], first)
  assert.equal(values[0][0], first[0], "a's view is the same object: a row of it need not re-render")
  assert.notEqual(values[0][1], first[1])
  assert.deepEqual(values[0][1].state, { x: 7 })
  assert.ok(values[0][1].obj.x === 7 && values[0][1].obj.name === "b", "obj is the registered instance")
  off()
})

test("objectsStore(filter) and objectsStore(): across keys", () => {
  const mirror = setup()
  const far = objectsStore(mirror, view => view.state.x >= 10)
  const all = objectsStore(mirror)
  const events = []
  const offs = [
    far.listen(value => events.push(["far", short(value)])),
    all.listen(value => events.push(["all", short(value)]))
  ]
  mirror.handle(add("a", 1, { x: 0 }))
  mirror.handle(add("b", 1, { x: 10 }, { sKey: "k2" }))
  mirror.handle(mod("a", 2, { x: 11 }))
  mirror.handle(mod("b", 2, { x: 3 }, { sKey: "k2" }))
  mirror.setKeys(["k2"])
  offs.forEach(off => off())
  assert.deepEqual(events, [
    ["all", ["a:0@1"]],
    ["far", ["b:10@1"]], ["all", ["a:0@1", "b:10@1"]],
    ["far", ["a:11@2", "b:10@1"]], ["all", ["a:11@2", "b:10@1"]],
    ["far", ["a:11@2"]], ["all", ["a:11@2", "b:3@2"]],
    ["far", []], ["all", ["b:3@2"]]
  ])
  assert.throws(() => objectsStore(mirror, 42), TypeError)
})

test("objectStore(id): the object's view, told only about that object, until it leaves and after it comes back", () => {
  const mirror = setup()
  const store = objectStore(mirror, "a")
  const events = []
  const off = store.subscribe(value => events.push(short(value)))
  mirror.handle(add("b", 1, { x: 1 }))
  mirror.handle(add("a", 1, { x: 0 }))
  mirror.handle(mod("b", 2, { x: 2 }))
  mirror.handle(mod("a", 2, { x: 3 }))
  mirror.handle(rem("a"))
  mirror.handle(add("a", 1, { x: 4 }))
  off()
  mirror.handle(mod("a", 2, { x: 5 }))
  assert.deepEqual(events, [undefined, "a:0@1", "a:3@2", undefined, "a:4@1"])
  assert.equal(store.get(), mirror.view("a"))
})

test("stores take a Synk as well as a Mirror, and unsubscribing twice is harmless", () => {
  const mirror = setup()
  const fakeSynk = { objects: mirror }
  mirror.handle(add("a", 1, { x: 0 }))
  const store = objectStore(fakeSynk, "a")
  const events = []
  const off = store.listen(v => events.push(short(v)))
  off()
  off()
  mirror.handle(mod("a", 2, { x: 1 }))
  assert.deepEqual(events, [])
  assert.throws(() => objectsStore({}), TypeError)
})

test("holdKeys: the subscription is the union of the held keys and those set elsewhere, applied once per microtask", async () => {
  const calls = []
  const mirror = new Mirror()
  const synk = {
    objects: mirror,
    closed: false,
    setSubscription(keys) {
      calls.push([...keys])
      mirror.setKeys(keys)
    }
  }
  synk.setSubscription(["own"])
  const releaseA = holdKeys(synk, ["a", "b"])
  const releaseB = holdKeys(synk, ["b", "c"])
  await null
  releaseA()
  releaseA() // twice: no effect
  await null
  // A release and the same hold at once (StrictMode's effects): no change.
  releaseB()
  const releaseB2 = holdKeys(synk, ["b", "c"])
  await null
  releaseB2()
  await null
  assert.deepEqual(calls, [["own"], ["own", "a", "b", "c"], ["own", "b", "c"], ["own"]])
  assert.throws(() => holdKeys(synk, ["bad key"]), TypeError)
  assert.throws(() => holdKeys(synk, "k"), TypeError)
})
