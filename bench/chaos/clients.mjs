// A fleet of synk clients in one Node process, for `python -m bench.chaos`.
//
// Usage: node bench/chaos/clients.mjs '{"name": "p0", "urls": [...], "count": 10, "keys": [...], "seed": 1}'
//
// Each client is the project's JS client (client/index.js) on the "ws"
// package (Node 20 has no global WebSocket without a flag), connected to
// one of `urls` (picked at random) and following a random subset of `keys`.
// Commands arrive on stdin, one JSON object a line; answers go to stdout,
// one JSON line each, carrying the command's `seq`:
//
//   {"cmd": "churn", "on": true|false}   start / stop random subscription changes
//   {"cmd": "slow", "n": N, "ms": T}     N random clients read slowly for T ms
//                                        (their socket paused 80% of the time)
//   {"cmd": "stall", "n": N, "ms": T}    N random clients stop reading for T ms
//   {"cmd": "heal"}                      every client reads normally again
//   {"cmd": "mark"}                      start counting the process's delivery gaps and
//                                        each client's reconnections afresh (a storm begins)
//   {"cmd": "gaps"}                      {since, now, gaps: [[from, to], ...], reconnects}: the
//                                        stretches (over GAP_MS, epoch ms) in which no client of
//                                        the process received a mod or rem since the mark
//                                        (or since the process started), the reconnections, and
//                                        the close codes of the sockets closed ({code: count})
//   {"cmd": "report"}                    every client's subscription and mirror
//   {"cmd": "trace", "client": NAME, "ids": [...]}  what that client saw of these objects
//   {"cmd": "quit"}                      close every client and exit
//
// A report is {clients: [{name, url, keys, size, connected, objects: {id: [sKey, v, i, state]}, errors, closes, reconnects}]}:
// `objects` lists the mirror's objects in the subscribed keys, `size` counts all of them.
// The process also exits when stdin ends (the orchestrator died).
import { createRequire } from "node:module"
import { createInterface } from "node:readline"
import path from "node:path"
import { fileURLToPath, pathToFileURL } from "node:url"

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..", "..")
// "ws" is a dev dependency of the client package: resolve it from there.
const require = createRequire(path.join(ROOT, "client", "package.json"))
const { WebSocket } = require("ws")
const { Synk } = await import(pathToFileURL(path.join(ROOT, "client", "index.js")).href)

const config = JSON.parse(process.argv[2])

/** mulberry32: a small seeded generator, so that a seed replays the same churn. */
function seeded(seed) {
  let a = seed >>> 0
  return () => {
    a = (a + 0x6d2b79f5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}
const random = seeded(config.seed)

// Delivery gaps: the process's clients as one receiver. A stretch in which
// none of them got an update is reported when longer than GAP_MS; the
// orchestrator intersects the processes' stretches, so that what remains is
// time in which no client at all received anything. Only mod and rem count:
// a snapshot (a key followed, or re-snapshotted) arrives as adds, which
// would hide a stop of the simulation's writes; each tick changes objects in
// most keys, so mods flow to every process as long as writes are delivered.
const GAP_MS = 200
const delivery = { since: Date.now(), last: Date.now(), gaps: [], closes: {} }
function delivered() {
  const now = Date.now()
  if (now - delivery.last > GAP_MS) delivery.gaps.push([delivery.last, now])
  delivery.last = now
}
const UPDATES = new Set(["mod", "rem"])
const pick = (list) => list[Math.floor(random() * list.length)]

/** A random subset of the keys: each key with probability p (at least one key). */
function subset(p) {
  const out = config.keys.filter(() => random() < p)
  return out.length ? out : [pick(config.keys)]
}

class Client {
  constructor(name, url) {
    this.name = name
    this.url = url
    this.socket = null
    this.errors = {}
    this.closes = 0
    // Sockets opened, and the count when the storm began (null: count all but the first).
    this.opens = 0
    this.opensAtMark = null
    this.churnTimer = null
    this.slowTimer = null
    this.stallTimer = null
    const self = this
    // Keeps the current socket, so that reading can be paused (ws's pause()
    // stops reading the TCP socket: the gateway's writes back up).
    // Every frame in and out is also kept in `trace`, to explain a divergence.
    this.trace = []
    this.t0 = Date.now()
    class TrackedWebSocket extends WebSocket {
      constructor(u) {
        super(u)
        self.socket = this
        self.note("socket", u)
        this.addEventListener("open", () => {
          self.opens++
          self.note("open")
        })
        this.addEventListener("close", (e) => {
          delivery.closes[e.code] = (delivery.closes[e.code] || 0) + 1
          self.note("close", e.code)
        })
        this.addEventListener("message", (e) => {
          const msg = JSON.parse(e.data)
          if (UPDATES.has(msg.method)) delivered()
          self.note("in", msg)
        })
      }
      send(data) {
        self.note("out", JSON.parse(data))
        super.send(data)
      }
    }
    this.synk = new Synk(url, { WebSocket: TrackedWebSocket, backoff: { min: 50, max: 1000 }, random })
    this.synk.on("error", (e) => {
      this.errors[e.code] = (this.errors[e.code] || 0) + 1
    })
    this.synk.on("close", () => {
      this.closes++
    })
    this.synk.setSubscription(subset(0.5))
  }

  /** One line of the trace: ms since start, what, detail. */
  note(what, detail = null) {
    this.trace.push([Date.now() - this.t0, what, detail])
  }

  /** The trace lines that concern `ids`: their messages, snapshots, subscriptions and socket events. */
  traceOf(ids) {
    const wanted = new Set(ids)
    const out = []
    for (const [t, what, d] of this.trace) {
      if (what !== "in" && what !== "out") out.push([t, what, d])
      else if (d.method === "snap") out.push([t, what, { method: "snap", sKey: d.sKey, n: d.ids.length, has: d.ids.filter((i) => wanted.has(i)) }])
      else if (d.id === undefined || wanted.has(d.id)) out.push([t, what, d])
    }
    return out
  }

  /** One random change of subscription: mostly a key or two in or out, sometimes a whole new set. */
  churnOnce() {
    const keys = new Set(this.synk.objects.keys())
    const r = random()
    if (r < 0.25) {
      this.synk.setSubscription(subset(random()))
      return
    }
    for (let j = 1 + Math.floor(random() * 2); j > 0; j--) {
      const key = pick(config.keys)
      if (keys.has(key)) keys.delete(key)
      else keys.add(key)
    }
    this.synk.setSubscription([...keys])
  }

  churn(on) {
    clearTimeout(this.churnTimer)
    this.churnTimer = null
    if (!on) return
    const next = () => {
      this.churnTimer = setTimeout(() => {
        this.churnOnce()
        next()
      }, 300 + random() * 2700)
    }
    next()
  }

  pause(noted = true) {
    if (noted) this.note("pause")
    if (this.socket && this.socket.readyState === WebSocket.OPEN) this.socket.pause()
  }

  resume(noted = true) {
    if (noted) this.note("resume")
    if (this.socket && this.socket.readyState === WebSocket.OPEN) this.socket.resume()
  }

  /** Read slowly for `ms`: paused 40 ms of every 50. */
  slow(ms) {
    clearInterval(this.slowTimer)
    let tick = 0
    this.note("slow", ms)
    this.slowTimer = setInterval(() => (tick++ % 5 === 0 ? this.resume(false) : this.pause(false)), 10)
    clearTimeout(this.stallTimer)
    this.stallTimer = setTimeout(() => this.heal(), ms)
  }

  /** Stop reading for `ms`. */
  stall(ms) {
    clearTimeout(this.stallTimer)
    this.pause()
    this.stallTimer = setTimeout(() => this.heal(), ms)
  }

  heal() {
    clearInterval(this.slowTimer)
    clearTimeout(this.stallTimer)
    this.slowTimer = this.stallTimer = null
    this.resume()
  }

  /** Sockets opened again since the storm began (or since the first, for a client started during it). */
  reconnects() {
    // The first socket is a connection, not a reconnection (a client may still be connecting at the mark).
    return Math.max(0, this.opens - Math.max(1, this.opensAtMark ?? 1))
  }

  report() {
    const objects = {}
    const mirror = this.synk.objects
    for (const key of mirror.keys()) {
      for (const obj of mirror.byKey(key)) {
        const e = mirror.entry(obj.id)
        objects[e.id] = [e.sKey, e.v, e.i ?? null, obj.state]
      }
    }
    return {
      name: this.name,
      url: this.url,
      keys: mirror.keys(),
      size: mirror.size,
      connected: this.synk.connected,
      objects,
      errors: this.errors,
      closes: this.closes,
      reconnects: this.reconnects(),
    }
  }
}

const clients = []
for (let j = 0; j < config.count; j++) clients.push(new Client(`${config.name}.${j}`, pick(config.urls)))

/** `n` distinct random clients. */
function some(n) {
  const pool = [...clients]
  const out = []
  while (out.length < n && pool.length) out.push(pool.splice(Math.floor(random() * pool.length), 1)[0])
  return out
}

function answer(obj) {
  process.stdout.write(JSON.stringify(obj) + "\n")
}

const lines = createInterface({ input: process.stdin })
lines.on("line", (line) => {
  let cmd
  try {
    cmd = JSON.parse(line)
  } catch {
    return
  }
  const seq = cmd.seq
  switch (cmd.cmd) {
    case "churn":
      for (const c of clients) c.churn(cmd.on)
      return answer({ seq, ok: true })
    case "slow":
      return answer({ seq, ok: true, who: some(cmd.n).map((c) => (c.slow(cmd.ms), c.name)) })
    case "stall":
      return answer({ seq, ok: true, who: some(cmd.n).map((c) => (c.stall(cmd.ms), c.name)) })
    case "heal":
      for (const c of clients) c.heal()
      return answer({ seq, ok: true })
    case "mark":
      delivery.since = delivery.last = Date.now()
      delivery.gaps = []
      delivery.closes = {}
      for (const c of clients) c.opensAtMark = c.opens
      return answer({ seq, ok: true })
    case "gaps": {
      const now = Date.now()
      const gaps = [...delivery.gaps]
      if (now - delivery.last > GAP_MS) gaps.push([delivery.last, now])
      const reconnects = clients.reduce((n, c) => n + c.reconnects(), 0)
      return answer({ seq, ok: true, since: delivery.since, now, gaps, reconnects, closes: delivery.closes })
    }
    case "trace": {
      const c = clients.find((x) => x.name === cmd.client)
      return answer({ seq, ok: true, trace: c ? c.traceOf(cmd.ids) : [] })
    }
    case "report":
      return answer({ seq, ok: true, clients: clients.map((c) => c.report()) })
    case "quit":
      quit()
      return
    default:
      return answer({ seq, ok: false, error: `unknown command ${cmd.cmd}` })
  }
})

function quit() {
  for (const c of clients) {
    c.churn(false)
    c.heal()
    c.synk.close()
  }
  process.exit(0)
}
lines.on("close", quit)
answer({ ready: true, clients: clients.length })
