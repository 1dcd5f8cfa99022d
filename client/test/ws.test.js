// The client over a real socket: the "ws" package on both ends, a scripted
// stand-in for the gateway on loopback. Checks what the fakes cannot: that
// ws's WebSocket class works as the `WebSocket` option (string frames, close
// and error events, reconnects). Waits on events only, never on sleeps.
import { test } from "node:test"
import assert from "node:assert"
import { once } from "node:events"
import { WebSocket, WebSocketServer } from "ws"

import { Synk } from "../index.js"

/**
 * An events array whose `until(pred)` resolves once `pred(events)` holds;
 * checked on every push, so it cannot miss events that came in a burst.
 */
function recorder() {
  const events = []
  const waiters = []
  const check = () => {
    for (const w of [...waiters]) {
      if (w.pred(events)) {
        waiters.splice(waiters.indexOf(w), 1)
        w.resolve()
      }
    }
  }
  return {
    events,
    push(...event) {
      events.push(event)
      check()
    },
    until(pred) {
      return new Promise(resolve => {
        waiters.push({ pred, resolve })
        check()
      })
    }
  }
}

const count = name => events => events.filter(e => e[0] === name).length

test("talks to a gateway over ws, reconnects and reconciles", { timeout: 10_000 }, async t => {
  const wss = new WebSocketServer({ host: "127.0.0.1", port: 0 })
  t.after(() => wss.close())
  await once(wss, "listening")
  const url = `ws://127.0.0.1:${wss.address().port}/`

  // The stand-in gateway: hello, a snapshot per updateSubscription (object
  // "x" at version = connection number), and an echo of custom messages.
  const received = []
  const connections = []
  wss.on("connection", ws => {
    const n = connections.push(ws)
    const send = msg => ws.send(JSON.stringify(msg))
    send({ method: "hello", client: `c${n}` })
    ws.on("message", data => {
      const msg = JSON.parse(String(data))
      received.push([n, msg])
      if (msg.method === "updateSubscription") {
        for (const sKey of msg.add) {
          send({ method: "add", t: "thing", id: "x", sKey, v: n, state: { n } })
          send({ method: "snap", sKey, ids: ["x"] })
        }
      } else {
        send({ ...msg, echo: true })
      }
    })
  })

  const { events, push, until } = recorder()
  const synk = new Synk(url, { WebSocket, random: () => 0 })
  t.after(() => synk.close())
  synk.on("open", () => push("open"))
  synk.on("hello", id => push("hello", id))
  synk.on("close", info => push("close", info.code, info.delay))
  synk.on("message", msg => push("message", msg))
  synk.on("error", e => push("error", e.code))
  synk.objects.on("add", obj => push("add", obj.id, obj.v, { ...obj.state }))
  synk.objects.on("mod", obj => push("mod", obj.id, obj.v, { ...obj.state }))
  synk.objects.on("snap", sKey => push("snap", sKey))
  synk.setSubscription(["world:0|0"])
  synk.send("chat", { text: "queued before open" })

  await until(count("message")) // the queued chat went out after the subscription
  const x = synk.objects.get("x")
  synk.send("chat", { text: "live" })
  await until(events => count("message")(events) === 2)

  connections[0].terminate() // the network drops
  await until(events => count("snap")(events) === 2)

  assert.deepStrictEqual(events, [
    ["open"],
    ["hello", "c1"],
    ["add", "x", 1, { n: 1 }],
    ["snap", "world:0|0"],
    ["message", { method: "chat", text: "queued before open", echo: true }],
    ["message", { method: "chat", text: "live", echo: true }],
    ["close", 1006, 0],
    ["open"],
    ["hello", "c2"],
    ["mod", "x", 2, { n: 2 }],
    ["snap", "world:0|0"]
  ])
  assert.deepStrictEqual(received, [
    [1, { method: "updateSubscription", add: ["world:0|0"] }],
    [1, { method: "chat", text: "queued before open" }],
    [1, { method: "chat", text: "live" }],
    [2, { method: "updateSubscription", add: ["world:0|0"] }]
  ])
  assert.strictEqual(synk.objects.get("x"), x, "updated in place across the reconnect")
  assert.strictEqual(synk.clientId, "c2")
})
