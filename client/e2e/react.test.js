// synk-client/react in a real browser: React from npm (bundled here with
// esbuild into /vendor/, resolved by the page's import map), synk-client
// and its React entry loaded unbundled from the gateway. The page renders
// one key of the harness's world live, and only the rows whose objects
// changed re-render (the page counts renders per component).
import { test, before, after } from "node:test"
import assert from "node:assert/strict"
import { mkdtemp, rm, copyFile } from "node:fs/promises"
import { tmpdir } from "node:os"
import { fileURLToPath } from "node:url"
import path from "node:path"
import { build } from "esbuild"
import { chromium } from "playwright-core"

import { CHROMIUM, CHROMIUM_ARGS, browserSkip, until } from "./python.js"
import { startHarness } from "./harness.js"

const HERE = path.dirname(fileURLToPath(import.meta.url))
const skip = browserSkip()
const KEY = "world:0|0"
let h, browser, dir

/** React and ReactDOM's client as ES modules sharing one React (code splitting), into `dir`/vendor. */
async function bundleReact(dir) {
  await build({
    entryPoints: { react: "react", "react-dom-client": "react-dom/client" },
    absWorkingDir: path.dirname(HERE),
    bundle: true,
    splitting: true,
    format: "esm",
    outdir: path.join(dir, "vendor"),
    define: { "process.env.NODE_ENV": '"production"' },
    logLevel: "silent"
  })
}

before(async () => {
  if (skip) return
  dir = await mkdtemp(path.join(tmpdir(), "synk-react-"))
  await bundleReact(dir)
  await copyFile(path.join(HERE, "react-page", "index.html"), path.join(dir, "index.html"))
  h = await startHarness(["--static", dir])
  browser = await chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS })
})

after(async () => {
  if (browser) await browser.close()
  if (h) assert.equal(await h.quit(), 0, `the harness exits cleanly\n${h.log()}`)
  if (dir) await rm(dir, { recursive: true, force: true })
})

/** The page's rows: {id: text}, in order. */
const rows = (page) => page.evaluate(() => Object.fromEntries(
  [...document.querySelectorAll("#list li")].map((li) => [li.dataset.id, li.textContent])
))
const renders = (page) => page.evaluate(() => ({ ...window.renders }))

/** What rendered since `before`: {name: how many more times}, without zeros. */
function since(before, now) {
  const out = {}
  for (const [name, n] of Object.entries(now)) if (n !== (before[name] || 0)) out[name] = n - (before[name] || 0)
  return out
}

/** Wait until the rows match the store's objects of KEY exactly (ids and text). */
async function converge(page, what) {
  let last
  await until(async () => {
    const store = await h.stored([KEY])
    const want = Object.fromEntries(Object.entries(store).map(([id, o]) => [id, `${o.state.name} (${o.state.x}, ${o.state.y})`]))
    const got = await rows(page)
    last = [got, want]
    return JSON.stringify(Object.keys(got).sort()) === JSON.stringify(Object.keys(want).sort()) &&
      Object.keys(want).every((id) => got[id] === want[id])
  }, `the rows to equal the store (${what})`).catch((error) => {
    assert.deepEqual(last?.[0], last?.[1], error.message)
    throw error
  })
}

/** Let stray renders happen, if any would. */
const settle = () => new Promise((resolve) => setTimeout(resolve, 300))

test("a React page renders a key's objects live and re-renders only the rows that changed", { skip }, async () => {
  for (let n = 0; n < 5; n++) await h.call("create", { id: `r-${n}`, x: 1 + n * 2, y: 3, name: `agent ${n}` })
  await h.call("create", { id: "r-far", x: 40, y: 3, name: "far" }) // world:2|0: not followed
  await h.call("flush")

  const { http } = await h.call("gateway_url")
  const page = await browser.newPage()
  const pageErrors = []
  const loaded = []
  page.on("pageerror", (e) => pageErrors.push(e))
  page.on("response", (r) => loaded.push([new URL(r.url()).pathname, r.status()]))
  await page.goto(`${http}?key=${KEY}&watch=r-1`)
  await converge(page, "first snapshot")
  assert.ok(loaded.some(([p, status]) => p === "/synk-client/react/index.js" && status === 200), "the React entry came from the gateway, unbundled")
  assert.ok(loaded.some(([p, status]) => p === "/synk-client/store/index.js" && status === 200))
  assert.deepEqual(await page.evaluate(() => window.synk.objects.subscribedKeys()), [KEY], "useSubscription set the subscription")
  assert.equal(await page.textContent("#watch"), "agent 1")
  await settle()

  // One object changes: its row re-renders, and the list; no other row.
  let before = await renders(page)
  await h.call("set", { id: "r-2", fields: { name: "renamed" } })
  await h.call("flush")
  await converge(page, "after a rename")
  await settle()
  assert.deepEqual(since(before, await renders(page)), { list: 1, "r-2": 1 })

  // The watched object changes: its row and the watcher.
  before = await renders(page)
  await h.call("set", { id: "r-1", fields: { x: 9, name: "watched" } })
  await h.call("flush")
  await converge(page, "after the watched one moved")
  await until(async () => (await page.textContent("#watch")) === "watched", "the watcher to update")
  await settle()
  assert.deepEqual(since(before, await renders(page)), { list: 1, "r-1": 1, watch: 1 })

  // A new object: only its row renders. A deletion and a move out of the
  // key: no row renders, the list does.
  before = await renders(page)
  await h.call("create", { id: "r-new", x: 12, y: 12, name: "new" })
  await h.call("flush")
  await converge(page, "after a create")
  await settle()
  assert.deepEqual(since(before, await renders(page)), { list: 1, "r-new": 1 })
  before = await renders(page)
  await h.call("delete", { id: "r-0" })
  await h.call("set", { id: "r-3", fields: { x: 30 } })
  await h.call("flush")
  await converge(page, "after a delete and a move out")
  await settle()
  const rendered = since(before, await renders(page))
  assert.deepEqual(Object.keys(rendered), ["list"], "no row re-rendered")
  assert.ok(rendered.list >= 1 && rendered.list <= 2)

  // A running simulation: the page keeps up, and renders stay per object.
  await h.call("start_sim", { bounds: [0, 0, 16, 16], step: 2, hz: 20 })
  await until(async () => (await h.call("sim")).ticks >= 10, "ten ticks")
  await h.call("stop_sim")
  await converge(page, "after the simulation")

  assert.deepEqual(pageErrors, [])
  assert.deepEqual(await page.evaluate(() => window.synkErrors), [])
  await page.close()
})
