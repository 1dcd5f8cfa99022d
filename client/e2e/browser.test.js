// The client in a real browser: headless Chromium loads e2e/page/, served by
// a gateway running in-process in e2e/harness.py (--static), which also
// serves the client itself at /synk-client/. The page mirrors agents that the
// harness's simulation keeps moving; the test checks it against the store.
import { test, before, after } from "node:test"
import assert from "node:assert/strict"
import { fileURLToPath } from "node:url"
import path from "node:path"
import { chromium } from "playwright-core"

import { CHROMIUM, CHROMIUM_ARGS, browserSkip, until } from "./python.js"
import { startHarness } from "./harness.js"

const PAGE_DIR = path.join(path.dirname(fileURLToPath(import.meta.url)), "page")
const skip = browserSkip()
let h, browser

before(async () => {
  if (skip) return
  h = await startHarness(["--static", PAGE_DIR])
  browser = await chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS })
})

after(async () => {
  if (browser) await browser.close()
  if (h) assert.equal(await h.quit(), 0, `the harness exits cleanly\n${h.log()}`)
})

const KEYS = ["world:0|0", "world:1|0"]

/** Wait until the page's mirror equals the store over its keys; on timeout, show the difference. */
function converge(page, what) {
  return h.converge(() => page.evaluate(() => window.mirrored()), KEYS, what)
}

test("a page loads the client from the gateway and mirrors a running simulation", { skip }, async () => {
  // Agents in both followed keys, one outside them, a simulation moving
  // them over the followed keys and one more chunk (so some leave and come back).
  for (let n = 0; n < 8; n++) {
    await h.call("create", { id: `b-${n}`, x: 2 + n * 4, y: 2 + n, name: `agent ${n}` })
  }
  await h.call("create", { id: "b-far", x: 100, y: 100, name: "far" })
  await h.call("flush")
  await h.call("start_sim", { bounds: [0, 0, 48, 16], step: 3, hz: 20 })

  const { http } = await h.call("gateway_url")
  const page = await browser.newPage()
  const pageErrors = []
  const loaded = []
  page.on("pageerror", (e) => pageErrors.push(e))
  page.on("response", (r) => loaded.push([new URL(r.url()).pathname, r.status()]))
  await page.goto(`${http}?keys=${KEYS.join(",")}`)
  await page.waitForFunction(() => window.synk && window.synk.connected)
  assert.ok(loaded.some(([p, status]) => p === "/synk-client/index.js" && status === 200), "the client came from the gateway")
  assert.deepEqual(await page.evaluate(() => window.synkKeys), KEYS)

  // Agents show up, and move.
  await until(async () => Object.keys(await page.evaluate(() => window.mirrored())).length > 0, "agents in the page")
  const first = await page.evaluate(() => window.mirrored())
  assert.equal(first["b-far"], undefined, "objects of other keys are not mirrored")
  await until(async () => {
    const now = await page.evaluate(() => window.mirrored())
    return Object.keys(first).some((id) => now[id] && (now[id].state.x !== first[id].state.x || now[id].state.y !== first[id].state.y))
  }, "an agent to move in the page")

  // Stopped, the page and the store agree exactly.
  const { ticks } = await h.call("stop_sim")
  assert.ok(ticks > 0)
  await converge(page, `after ${ticks} ticks`)

  // The harness's changes show up: a rename, a new agent, a deletion.
  const ids = Object.keys(await page.evaluate(() => window.mirrored()))
  await h.call("set", { id: ids[0], fields: { name: "renamed by the harness" } })
  await h.call("create", { id: "b-new", x: 20, y: 5, name: "new" })
  await h.call("delete", { id: ids[1] })
  await h.call("flush")
  const store = await converge(page, "after the harness's changes")
  assert.equal(store[ids[0]].state.name, "renamed by the harness")
  assert.ok(store["b-new"])
  assert.equal(store[ids[1]], undefined)
  assert.match(await page.textContent("#out"), /renamed by the harness/, "the page rendered it")

  assert.deepEqual(pageErrors, [])
  assert.deepEqual(await page.evaluate(() => window.synkErrors), [])
  await page.close()
})
