// Handles (compact mods, PROTOCOL.md): learned from adds, expanded in key's mods.
import { test } from "node:test"
import assert from "node:assert/strict"

import { Handles } from "./index.js"

const add = (id, h, i = "inc1", sKey = "k1") => ({ h, method: "add", t: "agent", id, sKey, v: 1, state: {}, i })

test("an add's handle is learned and the add comes back without it", () => {
  const handles = new Handles()
  const out = handles.learn(add("a", 7))
  assert.deepEqual(out, { method: "add", t: "agent", id: "a", sKey: "k1", v: 1, state: {}, i: "inc1" })
  assert.equal(handles.size, 1)
  const plain = { method: "add", t: "agent", id: "b", sKey: "k1", v: 1, state: {} }
  assert.equal(handles.learn(plain), plain, "an add without a handle is passed on as it is")
})

test("a key's mods expand to the full mods, in order, unknown handles counted", () => {
  const handles = new Handles()
  handles.learn(add("a", 7))
  const { i, ...noIncarnation } = add("b", 8)
  handles.learn(noIncarnation)
  const { sKey, mods, unknown, problem } = handles.expand(["k2", [7, 2, { x: 1 }], [9, 4, { x: 2 }], [8, 3, { y: 0.5 }]])
  assert.equal(problem, null)
  assert.equal(sKey, "k2")
  assert.equal(unknown, 1)
  assert.deepEqual(mods, [
    { method: "mod", t: "agent", id: "a", sKey: "k2", v: 2, diff: { x: 1 }, i: "inc1" },
    { method: "mod", t: "agent", id: "b", sKey: "k2", v: 3, diff: { y: 0.5 } }
  ])
})

test("a rem ends the handle of its incarnation only; a new incarnation's add replaces it", () => {
  const handles = new Handles()
  handles.learn(add("a", 7))
  handles.forget({ method: "rem", t: "agent", id: "a", sKey: "k1", i: "old" })
  assert.equal(handles.size, 1, "another incarnation's rem")
  handles.learn(add("a", 9, "inc2"))
  assert.equal(handles.size, 1, "the old incarnation's handle went")
  assert.equal(handles.expand(["k1", [7, 2, {}]]).unknown, 1)
  handles.forget({ method: "rem", t: "agent", id: "a", sKey: "k1", i: "inc2" })
  assert.equal(handles.size, 0)
})

test("past the bound the oldest handle goes", () => {
  const handles = new Handles(2)
  handles.learn(add("a", 1))
  handles.learn(add("b", 2))
  handles.learn(add("a", 1)) // learned again: the newest
  handles.learn(add("c", 3))
  assert.equal(handles.size, 2)
  assert.equal(handles.expand(["k1", [2, 2, {}]]).unknown, 1, "b was the oldest")
  assert.equal(handles.expand(["k1", [1, 2, {}], [3, 2, {}]]).unknown, 0)
})

test("a malformed key's mods is a problem, not an exception", () => {
  const handles = new Handles()
  assert.match(handles.expand([3, [1, 1, {}]]).problem, /without a key/)
  assert.match(handles.expand(["k1"]).problem, /without a key and at least one mod/)
  assert.match(handles.expand(["k1", [1, 1]]).problem, /entry 1 is not \[handle, version, diff\]/)
  assert.match(handles.expand(["k1", [1, "2", {}]]).problem, /entry 1/)
})
