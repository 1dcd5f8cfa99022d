// Driving e2e/harness.py (Redis + gateway + a small synk world) from Node.
import assert from "node:assert/strict"
import { spawn } from "node:child_process"
import { createInterface } from "node:readline"
import { isDeepStrictEqual } from "node:util"
import { fileURLToPath } from "node:url"
import path from "node:path"
import { ROOT, python, until } from "./python.js"

const HARNESS = path.join(path.dirname(fileURLToPath(import.meta.url)), "harness.py")
/** How much of the harness's log (stderr) to keep for error messages. */
const LOG_TAIL = 20000

/**
 * Start the harness (`args`: e.g. ["--static", dir]) and resolve once it is
 * ready, with:
 * - `url`, `redis`: the gateway's websocket URL and the Redis URL,
 * - `call(cmd, fields)`: send a command, resolve with its answer (rejects
 *   when the harness answers ok: false, exits, or takes over `timeoutMs`),
 * - `quit()`: stop it (and its Redis and gateway), resolve with its exit code,
 * - `log()`: the tail of its stderr, which includes the gateway's log,
 * - `stored(keys)`: the store's objects in `keys`, {id: {sKey, v, i, state}},
 * - `converge(mirrored, keys, what, timeoutMs)`: wait until `await
 *   mirrored()` (a client's mirror, in the same shape) equals the store over
 *   `keys`; on timeout, fail showing the difference. Resolves with the store.
 * Set SYNK_E2E_LOG=1 to see that log live.
 */
export function startHarness(args = [], { timeoutMs = 30000 } = {}) {
  const proc = spawn(python(), [HARNESS, ...args], { cwd: ROOT, stdio: ["pipe", "pipe", "pipe"] })
  let log = ""
  proc.stderr.setEncoding("utf8")
  proc.stderr.on("data", (chunk) => {
    if (process.env.SYNK_E2E_LOG) process.stderr.write(chunk)
    log = (log + chunk).slice(-LOG_TAIL)
  })
  const lines = createInterface({ input: proc.stdout })
  const waiting = [] // FIFO of {seq, resolve, reject, timer}: answers come in order
  let seq = 0
  let exited = null

  const fail = (w, error) => {
    clearTimeout(w.timer)
    w.reject(error)
  }
  lines.on("line", (line) => {
    const w = waiting.shift()
    if (!w) return
    let msg
    try {
      msg = JSON.parse(line)
    } catch {
      return fail(w, new Error(`harness printed a non-JSON line: ${line}`))
    }
    if (msg.seq !== w.seq) return fail(w, new Error(`harness answered ${line} to command #${w.seq}`))
    clearTimeout(w.timer)
    if (msg.ok) w.resolve(msg)
    else w.reject(new Error(`harness: ${w.what} failed: ${msg.error}\n--- harness log:\n${log}`))
  })
  proc.on("exit", (code, signal) => {
    exited = code ?? signal
    for (const w of waiting.splice(0)) fail(w, new Error(`harness exited (${exited}) during ${w.what}\n--- harness log:\n${log}`))
  })

  const expect = (what, id) =>
    new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        waiting.splice(waiting.indexOf(w), 1)
        reject(new Error(`harness: no answer to ${what} within ${timeoutMs} ms\n--- harness log:\n${log}`))
      }, timeoutMs)
      const w = { seq: id, what, resolve, reject, timer }
      waiting.push(w)
    })

  function call(cmd, fields = {}) {
    if (exited !== null) return Promise.reject(new Error(`harness exited (${exited})\n--- harness log:\n${log}`))
    const id = ++seq
    const answer = expect(cmd, id)
    proc.stdin.write(JSON.stringify({ ...fields, cmd, seq: id }) + "\n")
    return answer
  }

  function quit(graceMs = 15000) {
    if (exited !== null) return Promise.resolve(exited)
    return new Promise((resolve) => {
      const timer = setTimeout(() => proc.kill("SIGKILL"), graceMs)
      proc.on("exit", (code, signal) => {
        clearTimeout(timer)
        resolve(code ?? signal)
      })
      call("quit").catch(() => {})
      proc.stdin.end()
    })
  }

  async function stored(keys) {
    return (await call("state", { keys })).objects
  }

  async function converge(mirrored, keys, what, timeoutMs = 10000) {
    let last
    try {
      await until(async () => {
        last = [await mirrored(), await stored(keys)]
        return isDeepStrictEqual(last[0], last[1])
      }, `the mirror to equal the store (${what})`, timeoutMs)
    } catch (error) {
      // Nothing compared yet: it is the harness that failed.
      if (!last) throw error
      assert.deepEqual(last[0], last[1], `${error.message}\n--- harness log:\n${log}`)
    }
    return last[1]
  }

  // The ready line has no seq.
  return expect("start", undefined).then(
    (ready) => ({ url: ready.url, redis: ready.redis, call, quit, log: () => log, stored, converge, proc }),
    (error) => {
      proc.kill("SIGKILL")
      throw error
    }
  )
}
