// Refusals and tokens against the real gateway: e2e/harness.py --auth runs a
// gateway whose authenticate hook accepts only the tokens the test names
// (`tokens` command), and counts every handshake (`admissions` command).
// A wrong token is refused with 4401 and the client stops; a token function
// lets the client come back with a fresh token after the accepted token
// rotates and the gateway restarts.
import { test, before, after } from "node:test"
import assert from "node:assert/strict"
import { WebSocket } from "ws"

import { Synk } from "../index.js"
import { startHarness } from "./harness.js"
import { until } from "./python.js"

const BACKOFF = { min: 20, max: 100 }
let h
const clients = []

before(async () => {
  h = await startHarness(["--auth", "--token", "good-1"])
})

after(async () => {
  for (const synk of clients) synk.close()
  if (h) assert.equal(await h.quit(), 0, `the harness exits cleanly\n${h.log()}`)
})

/** A Synk on the "ws" package recording its events, in order, in `events`. */
function client(url, options) {
  const events = []
  const synk = new Synk(url, { WebSocket, backoff: BACKOFF, ...options })
  clients.push(synk)
  synk.on("open", () => events.push(["open"]))
  synk.on("close", (info) => events.push(["close", info]))
  synk.on("error", (e) => events.push(["error", e]))
  synk.on("hello", () => events.push(["hello"]))
  return { synk, events }
}

/** Handshakes and refusals since `before` (an earlier `admissions` answer). */
async function admittedSince(before) {
  const now = await h.call("admissions")
  const refused = {}
  for (const [code, n] of Object.entries(now.refused)) {
    if (n - (before.refused[code] ?? 0)) refused[code] = n - (before.refused[code] ?? 0)
  }
  return { handshakes: now.handshakes - before.handshakes, refused, tokens: now.tokens.slice(before.tokens.length) }
}

test("a wrong token: one error 4401, then the client stops for good", async () => {
  const before = await h.call("admissions")
  const { synk, events } = client(h.url, { token: "wrong" })
  // Stopped with no reconnect scheduled (delay null): the unit tests show that
  // a client in this state never calls its WebSocket again.
  await until(() => synk.closed, "the client to stop")
  assert.deepEqual(events, [
    ["open"], // the gateway accepts a refused connection, then closes it at once
    ["close", { code: 4401, reason: "unauthorized", wasClean: true, delay: null }],
    ["error", { code: 4401, reason: "unauthorized" }]
  ])
  assert.deepEqual(await admittedSince(before), { handshakes: 1, refused: { 4401: 1 }, tokens: ["wrong"] })
  assert.equal(synk.connected, false)
})

test("no token at all is refused the same way", async () => {
  const before = await h.call("admissions")
  const { synk, events } = client(() => h.url)
  await until(() => synk.closed, "the client to stop")
  assert.deepEqual(events.filter(([name]) => name === "error"), [["error", { code: 4401, reason: "unauthorized" }]])
  assert.deepEqual(events.filter(([name]) => name === "close").map(([, info]) => info.delay), [null])
  assert.deepEqual(await admittedSince(before), { handshakes: 1, refused: { 4401: 1 }, tokens: [null] })
})

test("a token function: after the token rotates and the gateway restarts, the client comes back with the fresh one", async () => {
  await h.call("create", { id: "t-1", x: 1, y: 1, name: "first" })
  await h.call("flush")
  const before = await h.call("admissions")
  // The app's session service: hands out the current token; down once after the rotation.
  let current = "good-1"
  let downOnce = false
  const asked = []
  const token = async () => {
    asked.push(current)
    if (downOnce) {
      downOnce = false
      throw new Error("session service unavailable")
    }
    return current
  }
  const { synk, events } = client(h.url, { token })
  synk.setSubscription(["world:0|0"])
  await until(() => synk.objects.get("t-1"), "the agent mirrored")

  // The server now accepts only good-2, which the session service hands out,
  // and the gateway restarts: every connection drops.
  await h.call("tokens", { tokens: ["good-2"] })
  current = "good-2"
  downOnce = true
  events.length = 0
  await h.call("restart_gateway")
  await until(() => events.some(([name]) => name === "hello"), "the client back")

  await h.call("set", { id: "t-1", fields: { name: "after the rotation" } })
  await h.call("flush")
  await until(() => synk.objects.get("t-1")?.state.name === "after the rotation", "a change after the reconnect")

  const shown = events.map(([name, e]) =>
    name === "close" ? [name, e.code] : name === "error" ? [name, e.code, e.reason] : [name]
  )
  // Failed attempts while the gateway was down ("socket_error" and 1006) may come first.
  const tail = shown.filter(([name, code]) => !(name === "error" && code === "socket_error") && !(name === "close" && code === 1006))
  assert.equal(tail[0][0], "close", `the drop first: ${JSON.stringify(shown)}`)
  assert.deepEqual(tail.slice(1), [
    ["error", "token", "the token function failed: Error: session service unavailable"],
    ["open"],
    ["hello"]
  ])
  const seen = await admittedSince(before)
  assert.deepEqual(seen.refused, {}, "never refused")
  assert.deepEqual(seen.tokens, ["good-1", "good-2"], "the first connection with good-1, the one after with the fresh token")
  assert.equal(asked[0], "good-1")
  assert.deepEqual(asked.slice(-2), ["good-2", "good-2"], "asked again after the failure")
  assert.equal(synk.closed, false)
})
