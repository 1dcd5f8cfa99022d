// A page served from another origin than the gateway's, as the README's
// page would be in production: it imports the client from the gateway
// (which must send CORS headers for it) and connects, once the gateway
// allows its origin with `synk serve --origin`. A page from an origin not
// allowed can neither import the client nor connect.
import { test, before, after } from "node:test"
import assert from "node:assert/strict"
import { spawn } from "node:child_process"
import { createServer } from "node:http"
import { chromium } from "playwright-core"
import { CHROMIUM, CHROMIUM_ARGS, browserSkip, freePort, python, ROOT, startRedis, startSynk, stop, until } from "./python.js"

const skip = browserSkip()
let redis, gateway, allowed, other, browser



/** A plain web server (another origin than the gateway's) serving one page that uses the gateway. */
function pageServer(gatewayHttp, gatewayWs) {
  const html = `<!doctype html><meta charset="utf-8"><title>elsewhere</title>
<script type="module">
  import { Synk } from "${gatewayHttp}synk-client/index.js"
  const synk = new Synk("${gatewayWs}")
  synk.setSubscription(["room"])
  window.synk = synk
</script>`
  const server = createServer((req, res) => {
    res.writeHead(200, { "content-type": "text/html; charset=utf-8" })
    res.end(html)
  })
  return new Promise((resolve) => server.listen(0, "127.0.0.1", () => resolve({ server, url: `http://127.0.0.1:${server.address().port}/` })))
}

function writeDots(url) {
  // A simulation of three objects in key "room", written once.
  const code = `
import asyncio, sys, synk
class Dot(synk.Object):
    type_key = "dot"
    sub_key: str = "room"
    n: int = 0
async def main():
    async with synk.connect(sys.argv[1], types=[Dot]) as world:
        for i in range(3):
            world.create(Dot(id=f"d{i}", n=i))
        await world.flush()
asyncio.run(main())
`
  return new Promise((resolve, reject) => {
    const proc = spawn(python(), ["-c", code, url], { cwd: ROOT, stdio: ["ignore", "inherit", "inherit"] })
    proc.on("exit", (code) => (code === 0 ? resolve() : reject(new Error(`the writer exited with ${code}`))))
  })
}

before(async () => {
  if (skip) return
  redis = await startRedis()
  await writeDots(redis.url)
  const port = await freePort()
  const gwHttp = `http://127.0.0.1:${port}/`
  const gwWs = `ws://127.0.0.1:${port}/`
  allowed = await pageServer(gwHttp, gwWs)
  other = await pageServer(gwHttp, gwWs)
  gateway = await startSynk(
    ["serve", "--redis", redis.url, "--host", "127.0.0.1", "--port", String(port), "--origin", allowed.url.slice(0, -1)],
    /(ws:\/\/\S+)/
  )
  browser = await chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS })
})

after(async () => {
  if (browser) await browser.close()
  if (gateway) await stop(gateway.proc)
  for (const page of [allowed, other]) if (page) page.server.close()
  if (redis) redis.proc.kill("SIGKILL")
})

test("a page from an allowed origin imports the client from the gateway and mirrors its keys", { skip }, async () => {
  const page = await browser.newPage()
  const errors = []
  page.on("pageerror", (e) => errors.push(String(e)))
  page.on("console", (m) => m.type() === "error" && errors.push(m.text()))
  await page.goto(allowed.url)
  await page.waitForFunction(() => window.synk && window.synk.objects.size === 3, null, { timeout: 15000 })
  const ns = await page.evaluate(() => ["d0", "d1", "d2"].map((id) => window.synk.objects.get(id).state.n))
  assert.deepEqual(ns, [0, 1, 2])
  assert.deepEqual(errors, [])
  await page.close()
})

test("a page from an origin not allowed cannot even import the client", { skip }, async () => {
  const page = await browser.newPage()
  const errors = []
  page.on("console", (m) => m.type() === "error" && errors.push(m.text()))
  await page.goto(other.url)
  await until(() => errors.some((e) => /CORS|Access-Control-Allow-Origin/.test(e)), "the browser to block the import")
  assert.equal(await page.evaluate(() => window.synk), undefined)
  await page.close()
})
