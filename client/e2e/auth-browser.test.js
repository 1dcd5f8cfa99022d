// A refused origin in a real browser: the in-process gateway of
// e2e/harness.py allows only pages from http://app.example, so the page it
// serves itself (from http://127.0.0.1:PORT) is refused with 4403. The page's
// client must report it once and stop; the gateway counts the handshakes.
import { test, before, after } from "node:test"
import assert from "node:assert/strict"
import { fileURLToPath } from "node:url"
import path from "node:path"
import { chromium } from "playwright-core"

import { CHROMIUM, CHROMIUM_ARGS, browserSkip } from "./python.js"
import { startHarness } from "./harness.js"

const PAGE_DIR = path.join(path.dirname(fileURLToPath(import.meta.url)), "page")
const skip = browserSkip()
let h, browser

before(async () => {
  if (skip) return
  h = await startHarness(["--static", PAGE_DIR, "--origin", "http://app.example"])
  browser = await chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS })
})

after(async () => {
  if (browser) await browser.close()
  if (h) assert.equal(await h.quit(), 0, `the harness exits cleanly\n${h.log()}`)
})

test("a page from a disallowed origin gets error 4403 once and stops reconnecting", { skip }, async () => {
  const { http } = await h.call("gateway_url")
  const page = await browser.newPage()
  const pageErrors = []
  page.on("pageerror", (e) => pageErrors.push(e))
  await page.goto(http)
  await page.waitForFunction(() => window.synk && window.synk.closed)
  // Closed with no reconnect scheduled (the close's delay is null, below): the
  // unit tests show that such a client never opens another socket.

  assert.deepEqual(await page.evaluate(() => window.synkErrors), [{ code: 4403, reason: "origin not allowed" }])
  const closes = await page.evaluate(() => window.synkCloses)
  assert.deepEqual(closes.map(({ code, reason, delay }) => ({ code, reason, delay })), [
    { code: 4403, reason: "origin not allowed", delay: null }
  ])
  assert.equal(await page.evaluate(() => window.synk.connected), false)
  const { handshakes, refused, tokens } = await h.call("admissions")
  assert.deepEqual({ handshakes, refused, tokens }, { handshakes: 1, refused: { 4403: 1 }, tokens: [null] }, "one connection attempt, refused")
  assert.deepEqual(pageErrors, [])
  await page.close()
})
