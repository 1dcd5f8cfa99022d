/**
 * The connection layer: one WebSocket to the gateway, kept open with
 * reconnects, feeding the mirror and carrying the subscription, resyncs and
 * custom messages. Timers, randomness and the WebSocket class are injectable
 * so tests can drive every step without a network or sleeps.
 */
import { Handles } from "../compact/index.js"
import { createEmitter } from "../emitter/index.js"
import { Mirror } from "../mirror/index.js"
import { isRecord, timers } from "../shared/index.js"
import { backoffDelay, declaredUrl, tokenUrl } from "./dial.js"

export { backoffDelay, declaredUrl, tokenUrl }

/** Methods the protocol reserves; custom messages may not use them (Python's RESERVED_METHODS, a test holds them equal). */
export const RESERVED = new Set([
  "hello", "add", "mod", "rem", "snap", "resnap", "error", "updateSubscription", "resync"
])
const SYNK_EVENTS = new Set(["open", "close", "error", "message", "hello"])
/** WebSocket.OPEN; a constant of the standard, not read from the impl. */
const OPEN = 1
/**
 * Close codes that end the client for good, with the reason reported when
 * the close carries none: the gateway refused the connection (4401: its
 * `authenticate` hook; 4403: the page's origin), or a policy violation
 * (1008). Reconnecting would only be refused again.
 */
export const FINAL_CLOSE_CODES = Object.freeze({
  1008: "policy violation",
  4401: "unauthorized",
  4403: "origin not allowed"
})

const isThenable = x => x !== null && (typeof x === "object" || typeof x === "function") && typeof x.then === "function"

/** A failure of the url or token function; `code` is "url" or "token". */
class TargetError extends Error {
  constructor(code, message, cause) {
    super(message)
    this.code = code
    this.cause = cause
  }
}

const describe = value => (value === null ? "null" : Array.isArray(value) ? "an array" : typeof value)

export class Synk {
  /** The mirror of the subscribed objects. */
  objects
  /** The id the gateway gave this connection in `hello`; null until then. */
  clientId = null

  /** A string, or a function (sync or async) returning one (or a URL). */
  #url
  /** Undefined, a string, or a function (sync or async) returning one. */
  #token
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
  /** Counts connection attempts; an async URL or token of an older one is dropped. */
  #connectSeq = 0
  /** True while the constructor runs: errors wait a microtask for listeners. */
  #constructing = true
  /** Serialized custom messages waiting for an open socket. */
  #queue = []
  /** Declare compact mods (`options.compact`, default true). */
  #compact
  /** The handles of the current connection's compact mods. */
  #handles = new Handles()
  /** Keys whose compact mod named an unknown handle -> the timer asking for their snapshot again. */
  #lost = new Map()
  #gapTimeout

  constructor(url, options = {}) {
    this.#url = typeof url === "function" ? url : String(url)
    const { token } = options
    if (token !== undefined && token !== null && typeof token !== "string" && typeof token !== "function") {
      throw new TypeError("token must be a string or a function returning one")
    }
    this.#token = token ?? undefined
    this.#WebSocket = options.WebSocket || globalThis.WebSocket
    if (typeof this.#WebSocket !== "function") {
      throw new TypeError("no WebSocket implementation: pass options.WebSocket")
    }
    this.#backoff = { min: 100, max: 5000, ...options.backoff }
    const { min, max } = this.#backoff
    if (!(min > 0) || !(max >= min)) {
      throw new TypeError("backoff needs 0 < min <= max")
    }
    this.#compact = options.compact ?? true
    this.#gapTimeout = options.gapTimeout ?? 500
    if (typeof this.#compact !== "boolean") throw new TypeError("compact must be true or false")
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
    this.#constructing = false
  }

  /** True while the socket is open (sends go out at once). */
  get connected() {
    return this.#isOpen()
  }

  /**
   * True once the client has stopped for good: close() was called, the
   * gateway refused the connection (close code 4401, 4403 or 1008), or no
   * WebSocket could be created. No reconnect follows.
   */
  get closed() {
    return this.#stopped
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
    for (const timer of this.#lost.values()) this.#clearTimeout(timer)
    this.#lost.clear()
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

  /**
   * One connection attempt: the URL (and token) of this attempt, then the
   * socket. With a URL or token function that returns a promise, the socket
   * is created once it settles (unless close() came first).
   */
  #connect() {
    this.#reconnectTimer = null
    const seq = ++this.#connectSeq
    let target
    try {
      target = this.#target()
    } catch (failure) {
      this.#targetFailed(failure)
      return
    }
    if (!isThenable(target)) {
      this.#open(target)
      return
    }
    target.then(
      url => {
        if (!this.#stopped && seq === this.#connectSeq) this.#open(url)
      },
      failure => {
        if (!this.#stopped && seq === this.#connectSeq) this.#targetFailed(failure)
      }
    )
  }

  /**
   * The URL to connect to now: the `url` option (called if a function), with
   * the `token` option (called if a function) as its `token` parameter and
   * `synk_resnap=1`. A string, or a promise of one if either function
   * returned a promise. Throws (or rejects) a TargetError.
   */
  #target() {
    const url = this.#call("url", this.#url)
    const token = this.#call("token", this.#token)
    const build = (u, t) => {
      if (typeof u !== "string" && !(typeof URL === "function" && u instanceof URL)) {
        throw new TargetError("url", `the url function returned ${describe(u)}, not a string or URL`)
      }
      if (t !== undefined && t !== null && typeof t !== "string") {
        throw new TargetError("token", `the token function returned ${describe(t)}, not a string`)
      }
      return declaredUrl(tokenUrl(String(u), t), { compact: this.#compact })
    }
    if (!isThenable(url) && !isThenable(token)) return build(url, token)
    const settle = (what, value) =>
      Promise.resolve(value).catch(error => {
        throw new TargetError(what, `the ${what} function failed: ${error}`, error)
      })
    return Promise.all([settle("url", url), settle("token", token)]).then(([u, t]) => build(u, t))
  }

  /** `option` called if it is a function; a throw becomes a TargetError. */
  #call(what, option) {
    if (typeof option !== "function") return option
    try {
      return option()
    } catch (error) {
      throw new TargetError(what, `the ${what} function failed: ${error}`, error)
    }
  }

  /** The URL or token function failed: report it and try again after the backoff. */
  #targetFailed(failure) {
    if (!(failure instanceof TargetError)) {
      failure = new TargetError("url", `cannot build the URL: ${failure}`, failure)
    }
    const delay = backoffDelay(this.#attempt++, this.#backoff, this.#random)
    // Scheduled before reporting, so an "error" listener may still close().
    this.#reconnectTimer = this.#setTimeout(() => this.#connect(), delay)
    const error = { code: failure.code, reason: failure.message, delay }
    if (failure.cause !== undefined) error.error = failure.cause
    this.#report(error)
  }

  /** Report `error` now, or a microtask later inside the constructor (no listener yet). */
  #report(error) {
    if (this.#constructing) queueMicrotask(() => this.#error(error))
    else this.#error(error)
  }

  #open(url) {
    let ws
    try {
      ws = new this.#WebSocket(url)
    } catch (error) {
      // Only a bad URL or a blocked port throw here: retrying cannot help.
      // Reported a microtask later when the first attempt runs inside the
      // constructor, before any "error" listener could be attached.
      this.#stopped = true
      this.#report({ code: "socket_error", reason: `cannot connect: ${error}`, error })
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
    let parsed
    try {
      parsed = JSON.parse(data)
    } catch {
      this.#error({ code: "bad_frame", reason: "frame is not JSON", data })
      return
    }
    // A batch frame holds the messages of one gateway write, in order; an
    // array that starts with a key is one key's compact mods, alone.
    if (!Array.isArray(parsed)) {
      this.#onOne(parsed, data, "frame is")
      return
    }
    if (typeof parsed[0] === "string") {
      this.#onKeyMods(parsed, data)
      return
    }
    for (const msg of parsed) {
      // A listener may close the connection mid-batch: the rest is moot.
      if (this.#stopped) return
      try {
        if (Array.isArray(msg)) this.#onKeyMods(msg, data)
        else this.#onOne(msg, data, "batch frame holds a message that is")
      } catch (error) {
        // A bug of ours on one message must not drop the rest of the frame.
        this.#error({ code: "internal_error", reason: String(error), error })
      }
    }
  }

  #onKeyMods(item, data) {
    const { sKey, mods, unknown, problem } = this.#handles.expand(item)
    if (problem) {
      this.#error({ code: "bad_frame", reason: problem, data })
      return
    }
    for (const mod of mods) {
      if (this.#stopped) return
      this.objects.handle(mod)
    }
    // A handle this connection never learned (or forgot, past MOST_HANDLES):
    // its mod is lost, so the key is snapshotted again.
    if (unknown && this.objects.isSubscribed(sKey)) this.#lostMods(sKey)
  }

  /**
   * Resync a key whose mods were lost, once however many are lost before its
   * snap comes, and again every gapTimeout until it comes (a resync refused
   * for the rate limit would otherwise leave the objects stale), as the
   * mirror does for a version gap.
   */
  #lostMods(sKey) {
    if (this.#lost.has(sKey)) return
    const again = () => {
      if (!this.objects.isSubscribed(sKey) || !this.#isOpen()) {
        this.#lost.delete(sKey)
        return
      }
      this.#resync(sKey)
      this.#lost.set(sKey, this.#setTimeout(again, this.#gapTimeout))
    }
    again()
  }

  #onOne(msg, data, what) {
    if (!isRecord(msg) || typeof msg.method !== "string") {
      this.#error({ code: "bad_frame", reason: `${what} not an object with a string method`, data })
      return
    }
    if (msg.method === "add") msg = this.#handles.learn(msg)
    else if (msg.method === "rem") this.#handles.forget(msg)
    else if (msg.method === "snap" && this.#lost.has(msg.sKey)) {
      this.#clearTimeout(this.#lost.get(msg.sKey))
      this.#lost.delete(msg.sKey)
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
    // The next connection snapshots every key again: held mods are moot,
    // and so are this connection's handles.
    this.objects.resetPending()
    this.#handles.clear()
    for (const timer of this.#lost.values()) this.#clearTimeout(timer)
    this.#lost.clear()
    const code = event?.code ?? 1006
    if (Object.hasOwn(FINAL_CLOSE_CODES, code)) {
      this.#refused(code, event?.reason ?? "", Boolean(event?.wasClean))
      return
    }
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

  /**
   * The gateway refused us for good (4401, 4403, 1008): stop as close()
   * does, then report "close" (no reconnect: delay null) and one "error"
   * with the close code and reason.
   */
  #refused(code, reason, wasClean) {
    this.#stopped = true
    const count = this.#queue.length
    this.#queue = []
    this.#events.emit("close", { code, reason, wasClean, delay: null })
    this.#error({ code, reason: reason || FINAL_CLOSE_CODES[code] })
    if (count) {
      this.#error({ code: "queue_dropped", reason: `the connection was refused (${code}): ${count} queued messages dropped`, count })
    }
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
