// The README's "Ten lines of simulation, ten of page", run as written: its
// Python block as a script, its HTML block as a page served from another
// origin, in a real browser. Only the addresses change (a private Redis,
// free ports). Run twice, the script resumes its stored object instead of
// leaving a frozen copy behind.
import { test, before, after } from "node:test"
import assert from "node:assert/strict"
import { spawn } from "node:child_process"
import { readFileSync, writeFileSync, mkdtempSync, rmSync } from "node:fs"
import { createServer } from "node:http"
import { tmpdir } from "node:os"
import path from "node:path"
import { chromium } from "playwright-core"
import { CHROMIUM, CHROMIUM_ARGS, browserSkip, freePort, listening, python, ROOT, startRedis, stop, until } from "./python.js"

const skip = browserSkip()
let redis, browser, dir



/** The README's code blocks of one language, below a heading. */
function blocks(heading, lang) {
  const readme = readFileSync(path.join(ROOT, "README.md"), "utf8")
  const section = readme.split(`## ${heading}`)[1].split("\n## ")[0]
  return [...section.matchAll(new RegExp("```" + lang + "\\n([\\s\\S]*?)```", "g"))].map((m) => m[1])
}

before(async () => {
  if (skip) return
  redis = await startRedis()
  browser = await chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS })
  dir = mkdtempSync(path.join(tmpdir(), "synk-readme-"))
})

after(async () => {
  if (browser) await browser.close()
  if (redis) redis.proc.kill("SIGKILL")
  if (dir) rmSync(dir, { recursive: true, force: true })
})

test("the README's script and page, as written, run twice", { skip }, async () => {
  const [script] = blocks("Ten lines of simulation, ten of page", "python")
  const [html] = blocks("Ten lines of simulation, ten of page", "html")
  assert.ok(script.includes("redis://127.0.0.1:6379/0") && script.includes("8765") && script.includes("http://localhost:8000"))
  const gw = await freePort()
  const pagePort = await freePort()
  const file = path.join(dir, "example.py")
  writeFileSync(
    file,
    script
      .replace("redis://127.0.0.1:6379/0", `redis://127.0.0.1:${redis.port}/0`)
      .replaceAll("8765", String(gw))
      .replace("http://localhost:8000", `http://localhost:${pagePort}`)
  )
  const page = html.replaceAll("127.0.0.1:8765", `127.0.0.1:${gw}`)
  const server = createServer((req, res) => {
    res.writeHead(200, { "content-type": "text/html; charset=utf-8" })
    res.end(`<!doctype html><meta charset="utf-8">${page}`)
  })
  await new Promise((resolve) => server.listen(pagePort, "127.0.0.1", resolve))

  async function run() {
    let out = ""
    const proc = spawn(python(), [file], { cwd: dir, stdio: ["ignore", "pipe", "pipe"] })
    proc.stdout.on("data", (c) => (out += c))
    proc.stderr.on("data", (c) => (out += c))
    await until(() => listening(gw), "the example's gateway to listen", 20000)
    const tab = await browser.newPage()
    const logs = []
    tab.on("console", (m) => logs.push(m.text()))
    await tab.goto(`http://localhost:${pagePort}/page.html`)
    await until(() => logs.some((l) => l.startsWith("add ann")), `the page to log ann's add (logs: ${logs.join(" | ")})`, 15000)
    await until(() => logs.filter((l) => l.startsWith("mod ann")).length >= 3, "the page to log ann moving", 15000)
    const adds = logs.filter((l) => l.startsWith("add "))
    await tab.close()
    proc.kill("SIGINT") // Ctrl-C: the example's `async with` blocks close the gateway and the world
    const code = await stop(proc)
    return { adds, code, out }
  }

  try {
    const first = await run()
    assert.deepEqual(first.adds.map((l) => l.split(" ")[1]), ["ann"], first.out)
    // The second run finds ann stored and carries on with it: still one agent.
    const second = await run()
    assert.deepEqual(second.adds.map((l) => l.split(" ")[1]), ["ann"], second.out)
    assert.ok(!/Traceback \(most recent call last\)[\s\S]*(WriteError|SynkError)/.test(second.out), second.out)
  } finally {
    server.close()
  }
})
