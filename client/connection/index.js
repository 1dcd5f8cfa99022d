/**
 * The connection layer: one WebSocket to the gateway, kept open with
 * reconnects, feeding the mirror and carrying the subscription, resyncs and
 * custom messages. Timers, randomness and the WebSocket class are injectable
 * so tests can drive every step without a network or sleeps.
 */
import { createEmitter } from "../emitter/index.js"
import { Mirror } from "../mirror/index.js"
import { isRecord, timers } from "../shared/index.js"

/** Methods the protocol reserves; custom messages may not use them. */
const RESERVED = new Set([
  "hello", "add", "mod", "rem", "snap", "resnap", "error", "updateSubscription", "resync"
])
const SYNK_EVENTS = new Set(["open", "close", "error", "message", "hello"])
/** WebSocket.OPEN; a constant of the standard, not read from the impl. */
const OPEN = 1

/**
 * Reconnect delay in ms: exponential backoff with full jitter, i.e. uniform
 * in [0, min(max, min * 2^attempt)). Jitter spreads the reconnects of many
 * clients after a gateway restart instead of having them arrive in waves.
 */
export function backoffDelay(attempt, { min, max }, random = Math.random) {
  const cap = Math.min(max, min * 2 ** attempt)
  return Math.floor(random() * cap)
}

/**
 * `url` with `synk_resnap=1` in its query: it tells the gateway that this
 * client takes `snap`, `resnap` and an `add` of an object it holds, so the
 * gateway may re-snapshot on the live socket instead of closing it (the
 * original synk-js client takes none of them).
 */
export function declaredUrl(url) {
  const [base, fragment] = url.split("#", 2)
  const joined = base + (base.includes("?") ? "&" : "?") + "synk_resnap=1"
  return fragment === undefined ? joined : `${joined}#${fragment}`
}

export class Synk {
  /** The mirror of the subscribed objects. */
  objects
  /** The id the gateway gave this connection in `hello`; null until then. */
  clientId = null

  #url
  #WebSocket
  #backoff
  #maxQueue
  #random
  #setTimeout
  #clearTimeout
  #events
  #socket = null
  #opened = false
  #stopped = false
  /** Consecutive reconnects since the last `hello`. */
  #attempt = 0
  #reconnectTimer = null
  /** Serialized custom messages waiting for an open socket. */
  #queue = []

  constructor(url, options = {}) {
    this.#url = String(url)
    this.#WebSocket = options.WebSocket || globalThis.WebSocket
    if (typeof this.#WebSocket !== "function") {
      throw new TypeError("no WebSocket implementation: pass options.WebSocket")
    }
    this.#backoff = { min: 100, max: 5000, ...options.backoff }
    const { min, max } = this.#backoff
    if (!(min > 0) || !(max >= min)) {
      throw new TypeError("backoff needs 0 < min <= max")
    }
    this.#maxQueue = options.maxQueue ?? 1000
    if (!(this.#maxQueue >= 0)) throw new TypeError("maxQueue must be >= 0")
    this.#random = options.random || Math.random
    const { setTimeout, clearTimeout } = timers(options)
    this.#setTimeout = setTimeout
    this.#clearTimeout = clearTimeout

    this.#events = createEmitter((error, event) => this.#listenerThrew(error, event))
    // The mirror has the defaults of its own options.
    this.objects = new Mirror({
      gapTimeout: options.gapTimeout,
      snapTimeout: options.snapTimeout,
      goneLimit: options.goneLimit,
      setTimeout: options.setTimeout,
      clearTimeout: options.clearTimeout,
      onResync: sKey => this.#resync(sKey),
      onError: error => this.#error(error)
    })
    this.#connect()
  }

  /** True while the socket is open (sends go out at once). */
  get connected() {
    return this.#isOpen()
  }

  /**
   * "open" | "close" | "error" | "message" | "hello"; returns the
   * unsubscribe function.
   */
  on(event, fn) {
    // Catch typos such as synk.on("mod"), which belongs on synk.objects.
    if (!SYNK_EVENTS.has(event)) throw new TypeError(`unknown synk event: ${event}`)
    return this.#events.on(event, fn)
  }

  /**
   * Set the keys to follow. The mirror drops the objects of removed keys
   * now; the gateway gets the difference if connected, or the whole set
   * when the connection (re)opens.
   */
  setSubscription(keys) {
    const { add, remove } = this.objects.setKeys(keys)
    if ((add.length || remove.length) && this.#isOpen()) {
      // The added keys are snapshotted together: an object that moved
      // between two of them is moved, not removed and added anew.
      this.objects.expectSnaps(add)
      this.#sendNow({ method: "updateSubscription", add, remove })
    }
  }

  /**
   * Send the custom message `{method, ...payload}`. Returns true if it was
   * sent or queued for the next connection, false if it was dropped (queue
   * full or closed), which is also reported through "error".
   */
  send(method, payload = {}) {
    if (typeof method !== "string" || !method) {
      throw new TypeError("method must be a non-empty string")
    }
    if (RESERVED.has(method)) throw new TypeError(`"${method}" is a reserved method`)
    if (!isRecord(payload)) throw new TypeError("payload must be an object")
    // `method` first for readable frames, and last so payload cannot override it.
    const text = JSON.stringify(Object.assign({ method }, payload, { method }))
    if (this.#stopped) {
      this.#error({ code: "closed", reason: `"${method}" dropped: synk was closed`, method })
      return false
    }
    if (this.#isOpen() && this.#trySend(text)) return true
    if (this.#queue.length >= this.#maxQueue) {
      this.#error({
        code: "queue_full",
        reason: `"${method}" dropped: ${this.#queue.length} messages already wait for a connection`,
        method
      })
      return false
    }
    this.#queue.push(text)
    return true
  }

  /**
   * Close for good: no reconnect, no more events from the socket. Mirrored
   * objects stay as last seen (call setSubscription([]) first to tear them
   * down); messages still queued are dropped and reported.
   */
  close() {
    if (this.#stopped) return
    this.#stopped = true
    if (this.#reconnectTimer !== null) this.#clearTimeout(this.#reconnectTimer)
    this.#reconnectTimer = null
    this.objects.resetPending()
    const ws = this.#socket
    this.#socket = null
    this.#opened = false
    if (ws) {
      ws.onopen = ws.onmessage = ws.onclose = null
      // Not null: the "ws" package throws on an unhandled error event, which
      // closing a still-connecting socket produces.
      ws.onerror = () => {}
      try {
        ws.close(1000)
      } catch {
        // Already closed; nothing to release.
      }
    }
    if (this.#queue.length) {
      const count = this.#queue.length
      this.#queue = []
      this.#error({ code: "queue_dropped", reason: `close() dropped ${count} queued messages`, count })
    }
  }

  // ---- socket lifecycle --------------------------------------------------

  #connect() {
    this.#reconnectTimer = null
    let ws
    try {
      ws = new this.#WebSocket(declaredUrl(this.#url))
    } catch (error) {
      // Only a bad URL or a blocked port throw here: retrying cannot help.
      // Reported a microtask later: the first attempt runs inside the
      // constructor, before any "error" listener could be attached.
      this.#stopped = true
      queueMicrotask(() =>
        this.#error({ code: "socket_error", reason: `cannot connect: ${error}`, error })
      )
      return
    }
    this.#socket = ws
    // Every handler checks it is still the current socket: a replaced or
    // closed one may still deliver late events.
    const guard = fn => event => {
      if (ws !== this.#socket) return
      try {
        fn(event)
      } catch (error) {
        // A bug of ours; the socket handler must still not throw.
        this.#error({ code: "internal_error", reason: String(error), error })
      }
    }
    ws.onopen = guard(() => this.#onOpen())
    ws.onmessage = guard(event => this.#onMessage(event.data))
    ws.onclose = guard(event => this.#onClose(event))
    ws.onerror = guard(() => this.#error({ code: "socket_error", reason: "WebSocket error" }))
  }

  #onOpen() {
    this.#opened = true
    // The gateway starts every connection with no keys: send them all. Their
    // snapshots reconcile the mirror together (see Mirror.expectSnaps).
    const keys = this.objects.keys()
    if (keys.length) {
      this.objects.expectSnaps(keys)
      this.#sendNow({ method: "updateSubscription", add: keys })
    }
    while (this.#queue.length && this.#isOpen() && this.#trySend(this.#queue[0])) {
      this.#queue.shift()
    }
    this.#events.emit("open")
  }

  #onMessage(data) {
    if (typeof data !== "string") {
      this.#error({ code: "bad_frame", reason: "binary frame", data })
      return
    }
    let msg
    try {
      msg = JSON.parse(data)
    } catch {
      this.#error({ code: "bad_frame", reason: "frame is not JSON", data })
      return
    }
    if (!isRecord(msg) || typeof msg.method !== "string") {
      this.#error({ code: "bad_frame", reason: "frame is not an object with a string method", data })
      return
    }
    if (msg.method === "hello") {
      if (typeof msg.client !== "string") {
        this.#error({ code: "bad_shape", reason: "hello without a string client", msg })
        return
      }
      this.clientId = msg.client
      // The gateway accepted us: the next drop starts the backoff afresh.
      this.#attempt = 0
      this.#events.emit("hello", msg.client)
    } else if (msg.method === "resnap") {
      // The gateway re-snapshots these keys on its own (its store reconnected,
      // or our backlog was dropped): reconcile them as one batch.
      if (!Array.isArray(msg.keys) || !msg.keys.every((k) => typeof k === "string")) {
        this.#error({ code: "bad_shape", reason: "resnap without a list of keys", msg })
        return
      }
      this.objects.expectSnaps(msg.keys)
    } else if (msg.method === "error") {
      if (typeof msg.code !== "string") {
        this.#error({ code: "bad_shape", reason: "error without a string code", msg })
        return
      }
      this.#error({ code: msg.code, reason: typeof msg.reason === "string" ? msg.reason : "" })
    } else if (!this.objects.handle(msg)) {
      this.#events.emit("message", msg)
    }
  }

  #onClose(event) {
    this.#socket = null
    this.#opened = false
    this.clientId = null
    // The next connection snapshots every key again: held mods are moot.
    this.objects.resetPending()
    const delay = backoffDelay(this.#attempt++, this.#backoff, this.#random)
    // Scheduled before emitting, so a "close" listener may still close().
    this.#reconnectTimer = this.#setTimeout(() => this.#connect(), delay)
    this.#events.emit("close", {
      code: event?.code ?? 1006,
      reason: event?.reason ?? "",
      wasClean: Boolean(event?.wasClean),
      delay
    })
  }

  // ---- sending -----------------------------------------------------------

  #isOpen() {
    // readyState too: between the peer's close frame and our close event the
    // socket is CLOSING, and browsers discard sends then without a word.
    return this.#opened && this.#socket !== null && this.#socket.readyState === OPEN
  }

  #trySend(text) {
    try {
      this.#socket.send(text)
      return true
    } catch {
      return false
    }
  }

  /** Protocol messages: only meaningful on the current connection. */
  #sendNow(msg) {
    this.#trySend(JSON.stringify(msg))
  }

  #resync(sKey) {
    // The mirror only asks for keys with held mods, which are subscribed
    // ones. When not open, the reconnect will snapshot every key anyway.
    if (this.#isOpen()) {
      this.objects.expectSnaps([sKey])
      this.#sendNow({ method: "resync", keys: [sKey] })
    }
  }

  // ---- errors ------------------------------------------------------------

  #error(error) {
    if (this.#events.count("error") === 0) {
      // Nobody listens: the console is better than losing it.
      console.error(`synk-client: ${error.code}: ${error.reason}`)
      return
    }
    this.#events.emit("error", error)
  }

  #listenerThrew(error, event) {
    if (event === "error") {
      // Reporting through "error" again could loop.
      console.error("synk-client: an \"error\" listener threw", error)
      return
    }
    this.#error({ code: "callback_error", reason: `a "${event}" listener threw: ${error}`, error })
  }
}
