// `synk demo` on Redis, as two processes over one world: the first
// simulates, the second (a plain second `synk demo`) only serves. A page on
// each gateway sees the same world, and a click on one spawns an agent that
// the other sees. Once on one Redis, once on a local Redis Cluster of three
// primaries (the same commands, the URL of any node).
import { describe, test, before, after } from "node:test"
import assert from "node:assert/strict"
import { chromium } from "playwright-core"
import { CHROMIUM, CHROMIUM_ARGS, browserSkip, startPython, startRedis, startSynk, stop, until } from "./python.js"
import { mirrored } from "./demo.js"

const skip = browserSkip()



async function startCluster() {
  return startPython(["-m", "bench.redis_cluster"], /redis cluster ready: (redis:\/\/\S+)/, 60000)
}

for (const kind of ["redis", "cluster"]) {
  describe(`synk demo on ${kind === "cluster" ? "a Redis Cluster" : "one Redis"}`, () => {
    let redis, first, second, browser

    before(async () => {
      if (skip) return
      redis = kind === "cluster" ? await startCluster() : await startRedis()
      first = await startSynk(["demo", "--redis", redis.url, "--port", "0", "--agents", "400"], /open (http:\/\/\S+\/)/)
      second = await startSynk(["demo", "--redis", redis.url, "--port", "0"], /open (http:\/\/\S+\/)/)
      browser = await chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS })
    })

    after(async () => {
      if (browser) await browser.close()
      if (second) assert.equal(await stop(second.proc), 0)
      if (first) assert.equal(await stop(first.proc), 0)
      if (redis) await stop(redis.proc)
    })

    async function openPage(url) {
      const page = await browser.newPage({ viewport: { width: 800, height: 600 } })
      await page.goto(url)
      await page.waitForFunction(() => window.synk && window.synk.connected)
      // The same view on both pages: the map's middle, where the agents spawned.
      await page.evaluate(() => { Object.assign(window.demoView, { x: 300, y: 300 }); window.dispatchEvent(new Event("resize")) })
      return page
    }

    test("a second synk demo serves the world the first one simulates", { skip }, async () => {
      assert.match(second.output(), /another synk demo simulates this world/)
      const onFirst = await openPage(first.url)
      const onSecond = await openPage(second.url)
      const firstSeen = await until(async () => {
        const objs = await onSecond.evaluate(mirrored)
        return Object.keys(objs).length > 0 && objs
      }, "agents on the second gateway's page")
      await until(async () => {
        const now = await onSecond.evaluate(mirrored)
        return Object.keys(firstSeen).some((id) => now[id] && (now[id].x !== firstSeen[id].x || now[id].y !== firstSeen[id].y))
      }, "agents to move on the second gateway's page")

      // A click on the serving-only gateway reaches the simulating process.
      const before = new Set(Object.keys(await onFirst.evaluate(mirrored)))
      const clicked = Date.now()
      await onSecond.mouse.click(400, 300)
      const where = { x: 300 + 400 / 3, y: 300 + 300 / 3 }
      // An agent walks 6 units a second: on a loaded machine it is seen farther from the click.
      await until(async () => {
        const objs = await onFirst.evaluate(mirrored)
        const reach = 8 + (6 * (Date.now() - clicked)) / 1000
        return Object.entries(objs).some(([id, o]) => !before.has(id) && o.hue === 0 && Math.hypot(o.x - where.x, o.y - where.y) < reach)
      }, "the agent spawned through the second gateway, on the first gateway's page")
    })
  })
}
