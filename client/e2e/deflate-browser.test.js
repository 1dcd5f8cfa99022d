// permessage-deflate and compact mods with a real browser: the gateway
// (in-process, --deflate) writes its frames itself, so it compresses them
// itself; Chromium offers the extension, takes it, and must inflate every
// frame, and synk-client expand every key's compact mods, into the same
// mirror as the store, through a running simulation's moves, creates and
// deletes.
import { test, before, after } from "node:test"
import assert from "node:assert/strict"
import { fileURLToPath } from "node:url"
import path from "node:path"
import { chromium } from "playwright-core"

import { CHROMIUM, CHROMIUM_ARGS, browserSkip, until } from "./python.js"
import { startHarness } from "./harness.js"

const PAGE_DIR = path.join(path.dirname(fileURLToPath(import.meta.url)), "page")
const skip = browserSkip()
const KEYS = ["world:0|0", "world:1|0"]
let h, browser

before(async () => {
  if (skip) return
  h = await startHarness(["--static", PAGE_DIR, "--deflate"])
  browser = await chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS })
})

after(async () => {
  if (browser) await browser.close()
  if (h) assert.equal(await h.quit(), 0, `the harness exits cleanly\n${h.log()}`)
})

test("a browser takes permessage-deflate and mirrors the simulation through compressed frames", { skip }, async () => {
  for (let n = 0; n < 8; n++) {
    await h.call("create", { id: `z-${n}`, x: 2 + n * 4, y: 2 + n, name: `agent ${n}` })
  }
  await h.call("flush")
  await h.call("start_sim", { bounds: [0, 0, 48, 16], step: 3, hz: 20 })

  const { http } = await h.call("gateway_url")
  const page = await browser.newPage()
  const pageErrors = []
  page.on("pageerror", (e) => pageErrors.push(e))
  // What the browser and the gateway agreed on, from the handshake's response.
  const cdp = await page.context().newCDPSession(page)
  await cdp.send("Network.enable")
  const extensions = []
  const payloads = []
  cdp.on("Network.webSocketFrameReceived", ({ response }) => payloads.push(response.payloadData))
  cdp.on("Network.webSocketHandshakeResponseReceived", ({ response }) => {
    const header = Object.entries(response.headers).find(([name]) => name.toLowerCase() === "sec-websocket-extensions")
    extensions.push(header ? header[1] : "")
  })
  await page.goto(`${http}?keys=${KEYS.join(",")}`)
  await page.waitForFunction(() => window.synk && window.synk.connected)
  await until(() => extensions.length > 0, "the websocket handshake")
  assert.match(extensions[0], /permessage-deflate/)

  await until(async () => Object.keys(await page.evaluate(() => window.mirrored())).length > 0, "agents in the page")
  const { ticks } = await h.call("stop_sim")
  assert.ok(ticks > 0)
  await h.converge(() => page.evaluate(() => window.mirrored()), KEYS, `after ${ticks} ticks`)

  const ids = Object.keys(await page.evaluate(() => window.mirrored()))
  await h.call("set", { id: ids[0], fields: { name: "renamed ".repeat(20) } })
  await h.call("create", { id: "z-new", x: 20, y: 5, name: "new" })
  await h.call("delete", { id: ids[1] })
  await h.call("flush")
  const store = await h.converge(() => page.evaluate(() => window.mirrored()), KEYS, "after the harness's changes")
  assert.ok(store["z-new"])
  assert.equal(store[ids[1]], undefined)
  assert.deepEqual(pageErrors, [])
  // synk-client declared compact mods: adds carried handles, and mods came as a key's mods.
  assert.ok(payloads.some((p) => p.includes('{"h":')), "adds with handles")
  assert.ok(payloads.some((p) => p.startsWith('["world:') || p.includes(',["world:') || p.startsWith('[["world:')), "a key's mods")
  assert.equal(extensions.length, 1, "one connection, never reconnected")
  await page.close()
})
