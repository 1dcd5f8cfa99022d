// The inspector in a real browser: headless Chromium opens /inspect of a
// gateway run as `synk serve --inspect` (e2e/harness.py --inspect), and the
// test checks that it renders the counts, that they follow clients as they
// connect and subscribe, and that clicking a key shows its objects with
// their versions, live as the world changes them.
//
// SYNK_INSPECTOR_SCREENSHOT=docs/inspector.png also saves a screenshot of
// the populated page there (how the one in the docs is made).
import { test, before, after } from "node:test"
import assert from "node:assert/strict"
import path from "node:path"
import { WebSocket } from "ws"
import { chromium } from "playwright-core"

import { Synk } from "../index.js"
import { CHROMIUM, CHROMIUM_ARGS, ROOT, browserSkip, until } from "./python.js"
import { startHarness } from "./harness.js"

const skip = browserSkip()
let browser
const clients = []

before(async () => {
  if (skip) return
  browser = await chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS })
})

after(async () => {
  if (browser) await browser.close()
})

/** Close the test's followers before its harness goes: they would reconnect to nothing. */
async function quit(h) {
  for (const c of clients.splice(0)) c.close()
  assert.equal(await h.quit(), 0, `the harness exits cleanly\n${h.log()}`)
}

/** A synk client in Node following `keys`, connected. */
async function follower(url, keys) {
  const synk = new Synk(url, { WebSocket, backoff: { min: 50, max: 400 } })
  clients.push(synk)
  synk.setSubscription(keys)
  await until(() => synk.connected && keys.every((k) => synk.objects.isSubscribed(k)), `a client to follow ${keys}`)
  return synk
}

/** The number shown on a counter card. */
const card = (page, name) => page.textContent(`[data-stat="${name}"] .value`)

/** The objects table: {id: {t, v, state}}. */
function objectRows(page) {
  return page.evaluate(() =>
    Object.fromEntries(
      [...document.querySelectorAll("#objects tbody tr")].map((tr) => {
        const [id, t, v, state] = [...tr.cells].map((td) => td.textContent)
        return [id, { t, v: Number(v.replace(/,/g, "")), state: JSON.parse(state) }]
      })
    )
  )
}

/** Whether the objects table shows exactly what the store holds in `key` (ids, versions, states). */
async function showsStore(page, h, key) {
  const [rows, stored] = [await objectRows(page), await h.stored([key])]
  const want = Object.fromEntries(Object.entries(stored).map(([id, o]) => [id, { t: "agent", v: o.v, state: o.state }]))
  return JSON.stringify(Object.entries(rows).sort()) === JSON.stringify(Object.entries(want).sort()) && Object.keys(want).length > 0
}

test("the inspector renders, follows clients live, and shows a key's objects live", { skip }, async () => {
  const h = await startHarness(["--inspect"])
  try {
    for (let n = 0; n < 6; n++) await h.call("create", { id: `agent-${n}`, x: 1 + n * 2, y: 3 + n, name: `agent ${n}` })
    for (let n = 0; n < 3; n++) await h.call("create", { id: `far-${n}`, x: 20 + n, y: 2, name: `far ${n}` })
    await h.call("flush")
    const { http } = await h.call("gateway_url")

    const page = await browser.newPage({ viewport: { width: 1360, height: 940 } })
    const pageErrors = []
    page.on("pageerror", (e) => pageErrors.push(e))
    await page.goto(`${http}inspect`)
    await page.waitForFunction(() => document.querySelector("#status").dataset.state === "live")
    assert.equal(await page.textContent("h1"), "synk inspector")
    assert.equal(await card(page, "clients"), "0")
    assert.equal(await card(page, "keys"), "0")
    assert.equal(await page.isVisible("#clients-empty"), true)

    // Clients connect and subscribe: the counts and the keys follow, within a poll or two.
    await follower(h.url, ["world:0|0", "world:1|0"])
    await follower(h.url, ["world:0|0"])
    await until(async () => (await card(page, "clients")) === "2" && (await card(page, "subscriptions")) === "3", "the counts to follow")
    assert.equal(await card(page, "keys"), "2")
    const keyRows = () =>
      page.evaluate(() => [...document.querySelectorAll("#keys tbody tr")].map((tr) => [tr.dataset.key, tr.cells[1].textContent]))
    assert.deepEqual(await keyRows(), [["world:0|0", "2"], ["world:1|0", "1"]])
    assert.equal(await page.locator("#clients tbody tr").count(), 2)

    // Clicking a key shows its objects, with the store's versions and states.
    await page.click('#keys tbody tr[data-key="world:0|0"]')
    await until(() => showsStore(page, h, "world:0|0"), "the key's objects as stored")
    assert.equal(await page.textContent("#objects-key"), "world:0|0")
    // The page's own connection shows up too, marked as such.
    await until(async () => JSON.stringify(await keyRows()) === JSON.stringify([["world:0|0", "3"], ["world:1|0", "1"]]), "the page's subscription")
    await until(() => page.isVisible("#clients .pill.self"), "the page's own client marked")

    // The world changes an object: its row follows, version and state.
    const before = (await objectRows(page))["agent-2"]
    await h.call("set", { id: "agent-2", fields: { name: "renamed live" } })
    await h.call("flush")
    await until(async () => (await objectRows(page))["agent-2"]?.state.name === "renamed live", "the change in the page")
    const afterRow = (await objectRows(page))["agent-2"]
    assert.equal(afterRow.v, before.v + 1)
    assert.equal(afterRow.v, (await h.stored(["world:0|0"]))["agent-2"].v)

    // A running simulation: messages per second show, and the page keeps up with the store.
    await h.call("start_sim", { bounds: [0, 0, 32, 16], step: 2, hz: 20 })
    await until(async () => Number((await card(page, "out_rate")).replace(/[^0-9.]/g, "")) > 0, "messages per second")
    if (process.env.SYNK_INSPECTOR_SCREENSHOT) {
      // A fuller picture: more clients and keys, and a sparkline's worth of polls.
      await follower(h.url, ["world:1|0"])
      await follower(h.url, ["world:1|0", "world:2|0", "world:0|1"])
      await follower(h.url, ["world:3|3"])
      await until(async () => (await card(page, "clients")) === "6", "more clients")
      const polls = await page.evaluate(() => window.synkInspector.polls)
      await until(() => page.evaluate((n) => window.synkInspector.polls >= n + 25, polls), "25 more polls", 40000)
      await page.emulateMedia({ colorScheme: "dark" })
      await page.screenshot({ path: path.resolve(ROOT, process.env.SYNK_INSPECTOR_SCREENSHOT) })
      await page.emulateMedia({ colorScheme: "light" })
    }
    await h.call("stop_sim")
    await until(() => showsStore(page, h, "world:0|0"), "the key's objects as stored, after the simulation")

    // Another key: the table switches to it.
    await page.click('#keys tbody tr[data-key="world:1|0"]')
    await until(async () => (await page.textContent("#objects-key")) === "world:1|0", "the other key selected")
    await until(() => showsStore(page, h, "world:1|0"), "the other key's objects")

    assert.deepEqual(pageErrors, [])
    await page.close()
  } finally {
    await quit(h)
  }
})

test("behind authenticate, the page carries its token to its state and its websocket", { skip }, async () => {
  const h = await startHarness(["--inspect", "--auth", "--token", "ops-token"])
  try {
    await h.call("create", { id: "secret-1", x: 1, y: 1, name: "guarded" })
    await h.call("flush")
    const { http } = await h.call("gateway_url")
    const page = await browser.newPage()
    const pageErrors = []
    page.on("pageerror", (e) => pageErrors.push(e))

    const refused = await page.goto(`${http}inspect`)
    assert.equal(refused.status(), 401)

    await page.goto(`${http}inspect?token=ops-token`)
    await page.waitForFunction(() => document.querySelector("#status").dataset.state === "live")
    await follower(`${h.url}?token=ops-token`, ["world:0|0"])
    await until(async () => (await card(page, "clients")) === "1", "the client counted")
    await page.click('#keys tbody tr[data-key="world:0|0"]')
    await until(() => showsStore(page, h, "world:0|0"), "the key's objects, over a websocket with the token")
    const { tokens } = await h.call("admissions")
    assert.deepEqual(tokens, ["ops-token", "ops-token"], "both connections (the page's too) carried the token")
    assert.deepEqual(pageErrors, [])
    await page.close()
  } finally {
    await quit(h)
  }
})
