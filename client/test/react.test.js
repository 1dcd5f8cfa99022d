// synk-client/react in Node: server rendering reads the stores' current
// values (getServerSnapshot). Live updates and re-render counts are checked
// in a real browser (e2e/react.test.js).
import { test } from "node:test"
import assert from "node:assert/strict"
import React from "react"
import { renderToString } from "react-dom/server"

import { Mirror } from "../index.js"
import { SynkProvider, useObjects, useObject, useSynk, useSubscription, typedHooks } from "synk-client/react"

const h = React.createElement

function fakeSynk() {
  const mirror = new Mirror()
  mirror.setKeys(["k", "k2"])
  for (const [id, sKey, x] of [["a", "k", 1], ["b", "k", 2], ["c", "k2", 3]]) {
    mirror.handle({ method: "add", t: "agent", id, sKey, v: 1, state: { x } })
  }
  return { objects: mirror, closed: false, setSubscription: keys => mirror.setKeys(keys) }
}

test("the hooks render the mirror's views under a SynkProvider", () => {
  const synk = fakeSynk()
  const List = ({ select }) => h("ul", null, useObjects(select).map(v => h("li", { key: v.id }, `${v.id}=${v.state.x}`)))
  const One = ({ id }) => h("b", null, String(useObject(id)?.state.x))
  const Same = () => h("i", null, String(useSynk() === synk))
  const Follow = () => { useSubscription(["k3"]); return null } // effects do not run on the server
  const html = renderToString(h(SynkProvider, { synk },
    h(List, { select: "k" }), h(List, {}), h(One, { id: "c" }), h(One, { id: "nope" }), h(Same), h(Follow)))
  assert.equal(html, "<ul><li>a=1</li><li>b=2</li></ul><ul><li>a=1</li><li>b=2</li><li>c=3</li></ul><b>3</b><b>undefined</b><i>true</i>")
  assert.deepEqual(synk.objects.subscribedKeys(), ["k", "k2"])
})

test("a hook outside a SynkProvider says so", () => {
  const Lost = () => h("p", null, useObjects("k").length)
  assert.throws(() => renderToString(h(Lost)), /no <SynkProvider/)
})

test("typedHooks() returns the same hooks (the types differ only)", () => {
  const hooks = typedHooks()
  assert.equal(hooks.useObjects, useObjects)
  assert.equal(hooks.useObject, useObject)
  assert.equal(hooks.SynkProvider, SynkProvider)
})
