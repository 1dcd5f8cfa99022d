// Starting the Python side (synk's CLI, or a Python harness) for e2e tests.
import { spawn } from "node:child_process"
import { connect, createServer } from "node:net"
import { existsSync } from "node:fs"
import { fileURLToPath } from "node:url"
import path from "node:path"

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..")

/** The Python of the project's venv (make install), else python3 on the PATH. */
export function python() {
  if (process.env.SYNK_PYTHON) return process.env.SYNK_PYTHON
  const venv = path.join(ROOT, ".venv", "bin", "python")
  return existsSync(venv) ? venv : "python3"
}

/** Whether the browser tests can run; CI sets SYNK_REQUIRE_BROWSER=1 so they never skip. */
export const CHROMIUM = "/usr/bin/chromium"
export function browserSkip() {
  if (existsSync(CHROMIUM)) return false
  if (process.env.SYNK_REQUIRE_BROWSER) throw new Error(`${CHROMIUM} is missing: apt-get install -y chromium`)
  return `${CHROMIUM} is missing`
}

export const CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]

/**
 * Run `python -m synk.cli ...args` and resolve with {proc, url} once it
 * prints a line matching `pattern` (its first group is the URL).
 */
export function startSynk(args, pattern, timeoutMs = 20000) {
  return startPython(["-m", "synk.cli", ...args], pattern, timeoutMs)
}

/**
 * Run the project's Python with `argv` (from the repository's root) and
 * resolve with {proc, url, output} once it prints a line matching `pattern`.
 */
export function startPython(argv, pattern, timeoutMs = 20000) {
  const proc = spawn(python(), argv, { cwd: ROOT, stdio: ["ignore", "pipe", "pipe"] })
  let out = ""
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      proc.kill("SIGKILL")
      reject(new Error(`python ${argv.join(" ")} printed no ${pattern} within ${timeoutMs} ms:\n${out}`))
    }, timeoutMs)
    const onData = (chunk) => {
      out += chunk
      const m = out.match(pattern)
      if (m) {
        clearTimeout(timer)
        resolve({ proc, url: m[1], output: () => out })
      }
    }
    proc.stdout.on("data", onData)
    proc.stderr.on("data", onData)
    proc.on("exit", (code) => {
      clearTimeout(timer)
      reject(new Error(`python ${argv.join(" ")} exited with ${code}:\n${out}`))
    })
  })
}

/** Stop a process with SIGTERM and wait for its exit code. */
export function stop(proc, timeoutMs = 10000) {
  if (proc.exitCode !== null) return Promise.resolve(proc.exitCode)
  return new Promise((resolve) => {
    const timer = setTimeout(() => proc.kill("SIGKILL"), timeoutMs)
    proc.removeAllListeners("exit")
    proc.on("exit", (code, signal) => {
      clearTimeout(timer)
      resolve(code ?? signal)
    })
    proc.kill("SIGTERM")
  })
}

/** Poll `fn` (sync or async) until it returns a truthy value; fail after the deadline. */
export async function until(fn, what, timeoutMs = 10000, everyMs = 50) {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    const value = await fn()
    if (value) return value
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`)
    await new Promise((r) => setTimeout(r, everyMs))
  }
}

/** A TCP port free on 127.0.0.1 now. */
export function freePort() {
  return new Promise((resolve, reject) => {
    const server = createServer()
    server.once("error", reject)
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address()
      server.close(() => resolve(port))
    })
  })
}

/** Whether something accepts connections on 127.0.0.1:`port`. */
export function listening(port) {
  return new Promise((resolve) => {
    const socket = connect(port, "127.0.0.1", () => socket.end(() => resolve(true)))
    socket.on("error", () => resolve(false))
  })
}

/** A private redis-server (no persistence) on a free port: {proc, port, url}, once it listens. */
export async function startRedis() {
  const port = await freePort()
  const proc = spawn("redis-server", ["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"], { stdio: "ignore" })
  await until(() => listening(port), "redis-server to listen")
  return { proc, port, url: `redis://127.0.0.1:${port}/0` }
}
