// The demo in a real browser: `synk demo` started here, two headless
// Chromium pages driven by playwright-core.
import { test, before, after } from "node:test"
import assert from "node:assert/strict"
import { mkdirSync } from "node:fs"
import path from "node:path"
import { chromium } from "playwright-core"
import { ROOT, CHROMIUM, CHROMIUM_ARGS, browserSkip, startSynk, stop, until } from "./python.js"
import { mirrored } from "./demo.js"

const skip = browserSkip()
let demo, browser

before(async () => {
  if (skip) return
  demo = await startSynk(["demo", "--port", "0", "--agents", "2000"], /open (http:\/\/\S+\/)/)
  browser = await chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS })
})

after(async () => {
  if (browser) await browser.close()
  if (demo) assert.equal(await stop(demo.proc), 0, "synk demo exits cleanly on SIGTERM")
})

async function openPage() {
  const page = await browser.newPage({ viewport: { width: 800, height: 600 } })
  const errors = []
  page.on("pageerror", (e) => errors.push(e))
  await page.goto(demo.url)
  await page.waitForFunction(() => window.synk && window.synk.connected)
  page.errors = errors
  return page
}

test("the demo mirrors a live world, follows panning, and shares spawns", { skip }, async () => {
  const page = await openPage()

  // Agents appear.
  await page.waitForFunction((fn) => Object.keys(eval(fn)()).length > 0, mirrored.toString())
  const first = await page.evaluate(mirrored)

  // Their positions change over time.
  await until(async () => {
    const now = await page.evaluate(mirrored)
    return Object.keys(first).some((id) => now[id] && (now[id].x !== first[id].x || now[id].y !== first[id].y))
  }, "an agent to move")

  // Panning changes the subscribed keys and which agents are mirrored.
  const keysBefore = await page.evaluate(() => window.demoKeys.slice())
  const idsBefore = new Set(Object.keys(await page.evaluate(mirrored)))
  await page.mouse.move(700, 500)
  await page.mouse.down()
  for (let i = 1; i <= 10; i++) await page.mouse.move(700 - i * 60, 500 - i * 45)
  await page.mouse.up()
  const keysAfter = await page.evaluate(() => window.demoKeys.slice())
  assert.notDeepEqual(keysAfter, keysBefore)
  assert.ok(keysAfter.some((k) => !keysBefore.includes(k)), "new chunks entered the view")
  assert.ok(keysBefore.some((k) => !keysAfter.includes(k)), "old chunks left the view")
  await until(async () => {
    const ids = Object.keys(await page.evaluate(mirrored))
    return ids.length > 0 && ids.some((id) => !idsBefore.has(id))
  }, "agents of the new chunks")
  // Objects of chunks that left the view are no longer mirrored.
  const left = keysBefore.filter((k) => !keysAfter.includes(k))
  await until(() => page.evaluate((keys) => keys.every((k) => window.synk.objects.byKey(k).length === 0), left), "old chunks to empty")

  // A click in one page spawns an agent that a second page sees.
  const other = await openPage()
  await other.evaluate((v) => { Object.assign(window.demoView, v); window.dispatchEvent(new Event("resize")) }, await page.evaluate(() => ({ ...window.demoView })))
  await other.waitForFunction((fn) => Object.keys(eval(fn)()).length > 0, mirrored.toString())
  const spawnedBefore = new Set(Object.entries(await other.evaluate(mirrored)).filter(([, o]) => o.hue === 0).map(([id]) => id))
  const view = await page.evaluate(() => ({ ...window.demoView }))
  await page.mouse.click(400, 300)
  const where = { x: view.x + 400 / 3, y: view.y + 300 / 3 }
  const spawned = await until(async () => {
    const objs = await other.evaluate(mirrored)
    return Object.entries(objs).find(([id, o]) => o.hue === 0 && !spawnedBefore.has(id) && Math.hypot(o.x - where.x, o.y - where.y) < 8)
  }, "the spawned agent in the second page")
  assert.ok(spawned)
  await until(() => page.evaluate((id) => window.synk.objects.get(id) !== undefined, spawned[0]), "the spawned agent in the first page")

  const dir = path.join(ROOT, "artifacts")
  mkdirSync(dir, { recursive: true })
  await page.screenshot({ path: path.join(dir, "demo.png") })
  assert.deepEqual(page.errors, [])
  assert.deepEqual(other.errors, [])
})
