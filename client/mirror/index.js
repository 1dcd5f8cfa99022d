/**
 * The mirror: the client's copy of the server objects in the subscribed keys.
 *
 * It is pure bookkeeping, with no socket: the connection layer feeds it the
 * gateway's `add` / `mod` / `rem` / `snap` messages through `handle()`,
 * sends a `resync` when the mirror asks for one through `onResync`, and
 * tells it through `expectSnaps()` which keys it just asked the gateway to
 * snapshot. Timers are injectable so tests can drive the gap and snapshot
 * timeouts without sleeping.
 */
import { createEmitter } from "../emitter/index.js"
import { isRecord, timers } from "../shared/index.js"
import { HeldMods } from "./held.js"
import { METHODS, assertKeys, isString, isValidKey, shapeProblem } from "./shape.js"

export { isValidKey }

export class Mirror {
  /** id → { id, t, sKey, v, i, obj, plain, state, view }; `i` is undefined until an add names it */
  #entries = new Map()
  /** sKey → Set of ids mirrored in it (the index behind byKey) */
  #index = new Map()
  /** Subscribed keys, in the order they were asked for. */
  #keys = new Set()
  /** type `t` → class registered for it */
  #types = new Map()
  /** Mods that arrived ahead of their version. */
  #held = new HeldMods()
  /** sKey → gap timer, running while that key has held mods */
  #gapTimers = new Map()
  /**
   * Keys whose snapshot was asked for (expectSnaps) and has not come yet.
   * While any is awaited, removals decided by a snap wait in #deferred.
   */
  #awaiting = new Set()
  /** id → { e, sKey, cause }: objects a snap of `sKey` no longer listed */
  #deferred = new Map()
  /** Bounds how long #deferred may wait for the awaited snaps; null when idle. */
  #snapTimer = null
  /**
   * id → { i, v }: the last version seen of objects that left the followed
   * keys (moved out at `v`, or deleted: v = Infinity), oldest first, at most
   * #goneLimit. Another key's snapshot read before the departure, or its
   * replayed buffer, still carries older versions of them: without this they
   * would come back as ghosts (an object that moved A → B → C seen on B live
   * first, then at an old version in A's slower snapshot).
   */
  #gone = new Map()
  #goneLimit
  #events
  #gapTimeout
  #snapTimeout
  #setTimeout
  #clearTimeout
  #onResync
  #onError

  constructor(options = {}) {
    const { setTimeout, clearTimeout } = timers(options)
    this.#setTimeout = setTimeout
    this.#clearTimeout = clearTimeout
    this.#gapTimeout = options.gapTimeout ?? 500
    this.#snapTimeout = options.snapTimeout ?? 5000
    this.#goneLimit = options.goneLimit ?? 10_000
    this.#onResync = options.onResync || (() => {})
    this.#onError = options.onError || (() => {})
    this.#events = createEmitter((error, event) =>
      this.#report("callback_error", `a "${event}" listener threw: ${error}`, { error })
    )
  }

  // ---- public API --------------------------------------------------------

  /**
   * Mirror objects of type `t` as instances of `Class`:
   * `new Class(id, state, t, msg)`, then `instance.update(diff, msg)` and
   * `instance.teardown()` (both optional). Only affects objects added later.
   */
  register(t, Class) {
    if (!isString(t)) throw new TypeError("type must be a string")
    if (typeof Class !== "function") throw new TypeError("class must be a constructor")
    this.#types.set(t, Class)
  }

  /** "add" | "mod" | "rem" | "snap"; returns the unsubscribe function. */
  on(event, fn) {
    // Catch typos such as objects.on("open"): they would never fire.
    if (!METHODS.has(event)) throw new TypeError(`unknown mirror event: ${event}`)
    return this.#events.on(event, fn)
  }

  // Reading. Objects are what `register` made (an instance of the type's
  // class) or, for unregistered types, a plain {id, t, sKey, v, state}.

  /** The object with id `id` (an instance or a plain object), or undefined. */
  byId(id) {
    return this.#entries.get(id)?.obj
  }

  /** The same as byId(id): the name the client always had. */
  get(id) {
    return this.byId(id)
  }

  has(id) {
    return this.#entries.has(id)
  }

  /** Objects currently mirrored in `sKey` (a new array each call). */
  byKey(sKey) {
    return [...(this.#index.get(sKey) || [])].map(id => this.#entries.get(id).obj)
  }

  /** Every mirrored object, of every key (a new array each call). */
  all() {
    return [...this.#entries.values()].map(e => e.obj)
  }

  /** Iterating the mirror iterates every mirrored object (as all()). */
  *[Symbol.iterator]() {
    for (const e of [...this.#entries.values()]) yield e.obj
  }

  /** The ids of every mirrored object, or of those in `sKey` (a new array each call). */
  ids(sKey) {
    if (sKey === undefined) return [...this.#entries.keys()]
    return [...(this.#index.get(sKey) || [])]
  }

  /**
   * A snapshot of the bookkeeping record: { id, t, sKey, v, obj }, plus `i`
   * (the incarnation) once an add named one.
   */
  entry(id) {
    const e = this.#entries.get(id)
    if (!e) return undefined
    const out = { id: e.id, t: e.t, sKey: e.sKey, v: e.v, obj: e.obj }
    if (e.i !== undefined) out.i = e.i
    return out
  }

  /**
   * An immutable view of the object, whatever its class: a frozen
   * { id, t, sKey, v, state, obj } (plus `i` once known) whose `state` is a
   * frozen copy of the object's fields. The same view comes back until the
   * object changes (a new version, another key): views can be compared with
   * ===, which is what the store and the React hooks rely on.
   */
  view(id) {
    const e = this.#entries.get(id)
    if (!e) return undefined
    if (!e.view) {
      const view = { id: e.id, t: e.t, sKey: e.sKey, v: e.v, state: Object.freeze({ ...e.state }), obj: e.obj }
      if (e.i !== undefined) view.i = e.i
      e.view = Object.freeze(view)
    }
    return e.view
  }

  /** Number of mirrored objects. */
  get size() {
    return this.#entries.size
  }

  /** The subscribed keys, in the order they were given. */
  subscribedKeys() {
    return [...this.#keys]
  }

  /** The same as subscribedKeys(): the name the client always had (not object ids). */
  keys() {
    return this.subscribedKeys()
  }

  isSubscribed(sKey) {
    return this.#keys.has(sKey)
  }

  /**
   * Replace the subscribed set. Objects (and held mods) of dropped keys are
   * removed at once: the gateway sends nothing more for them. Returns the
   * difference, for the `updateSubscription` request.
   */
  setKeys(keys) {
    assertKeys(keys)
    const next = new Set()
    for (const key of keys) {
      if (!isValidKey(key)) throw new TypeError(`invalid subscription key: ${JSON.stringify(key)}`)
      next.add(key)
    }
    const add = [...next].filter(k => !this.#keys.has(k))
    const remove = [...this.#keys].filter(k => !next.has(k))
    this.#keys = next
    const awaited = this.#awaiting.size > 0
    for (const key of remove) {
      // No snapshot of it will come: nothing to wait for.
      this.#awaiting.delete(key)
      this.#dropHeld(key, () => true)
      for (const id of [...(this.#index.get(key) || [])]) {
        // Only the key's own objects; another key's removal may have taken
        // some already when listeners re-enter.
        const e = this.#entries.get(id)
        if (e) this.#remove(e, { method: "unsubscribe", sKey: key })
      }
    }
    // The dropped keys were the last awaited: the removals waiting on them
    // are decided (an object that left for a dropped key is gone for us).
    if (awaited && !this.#awaiting.size) this.#settle()
    return { add, remove }
  }

  /**
   * The gateway was just asked to snapshot `keys` together (the whole
   * subscription on a (re)connect, the keys a subscription change added, a
   * resync). Until each of them has sent its `snap` (or `snapTimeout` ms
   * pass), objects that a snap no longer lists stay mirrored; then those
   * that no `add` of any key brought back meanwhile are removed. An object
   * that moved between two of these keys is thus moved in place, whatever
   * order the keys' snapshots come in. Keys not subscribed are ignored.
   */
  expectSnaps(keys) {
    assertKeys(keys)
    for (const key of keys) if (this.#keys.has(key)) this.#awaiting.add(key)
    if (this.#awaiting.size && this.#snapTimer === null) {
      // Not restarted by later requests: no removal waits longer than
      // snapTimeout past the first of them, even under a stream of resyncs.
      this.#snapTimer = this.#setTimeout(() => {
        this.#snapTimer = null
        this.#settle()
      }, this.#snapTimeout)
    }
  }

  /**
   * Apply one gateway message. Returns false if it is not an object message
   * (add/mod/rem/snap), so the caller can treat it as something else.
   * Never throws: bad shapes and callback failures go to `onError`.
   */
  handle(msg) {
    if (!isRecord(msg) || !METHODS.has(msg.method)) return false
    const problem = shapeProblem(msg)
    if (problem) {
      this.#report("bad_shape", problem, { msg })
      return true
    }
    // Keys we do not follow: leftovers of a removed subscription.
    if (!this.#keys.has(msg.sKey)) return true
    if (msg.method === "add") this.#add(msg)
    else if (msg.method === "mod") this.#mod(msg)
    else if (msg.method === "rem") this.#rem(msg)
    else this.#snap(msg)
    return true
  }

  /**
   * Forget held mods and stop gap timers. Called when the connection drops:
   * the next connection snapshots every key again, which makes them moot.
   */
  resetPending() {
    this.#held.clear()
    for (const handle of this.#gapTimers.values()) this.#clearTimeout(handle)
    this.#gapTimers.clear()
    // The awaited snaps will not come on this connection. Objects whose
    // removal waited on them stay: the next snapshots decide again.
    this.#awaiting.clear()
    this.#deferred.clear()
    this.#stopSnapTimer()
  }

  // ---- message handlers --------------------------------------------------

  #add(msg) {
    // The object is in a followed key after all (it moved between keys
    // snapshotted together): whatever a snap decided, it stays.
    this.#deferred.delete(msg.id)
    const e = this.#entries.get(msg.id)
    if (!e) {
      if (this.#isGone(msg, msg.v + 1)) return // older than its departure: a stale snapshot
      this.#create(msg)
      this.#replayHeld(msg.id)
      return
    }
    // Versions count within one incarnation: an add of another one is news
    // whatever its version (the id was deleted and created again, or the
    // store was reset and the simulation started over).
    const reborn = isOtherIncarnation(e, msg)
    if (!reborn && msg.v <= e.v) return // stale
    // Held mods are of the old incarnation's versions: applied on top of the
    // new one they would be wrong.
    if (reborn) this.#dropHeldId(msg.id)
    // The same object at a newer version (a resync, a reconnect, or a move in
    // with psKey), or its new incarnation: update in place, never tear down
    // and re-create.
    this.#setKey(e, msg.sKey)
    e.v = msg.v
    if (msg.i !== undefined) e.i = msg.i
    e.view = null
    if (e.plain) {
      syncPlain(e)
      replaceContents(e.obj.state, msg.state)
    } else {
      replaceContents(e.state, msg.state)
      // Registered classes get the full new state as their "diff": it holds
      // every field, so applying it like a diff gives the new state.
      this.#call(e.obj, "update", msg.state, msg)
    }
    this.#events.emit("mod", e.obj, msg)
    this.#replayHeld(msg.id)
  }

  #mod(msg) {
    const e = this.#entries.get(msg.id)
    if (e && msg.v <= e.v) return // stale
    // Not mirrored since it left at a version this one does not pass: holding
    // it would only wait for an add that must not come.
    if (!e && this.#isGone(msg, msg.v)) return
    if (!e || msg.v > e.v + 1) {
      this.#hold(msg)
      return
    }
    this.#applyMod(e, msg)
    this.#replayHeld(msg.id)
  }

  #rem(msg) {
    const e = this.#entries.get(msg.id)
    // A late rem of another incarnation (the id was deleted and created
    // again) or of another key (a leftover of a key the object left) is not
    // about the object mirrored: removing it would lose the live one.
    if (e && (isOtherIncarnation(e, msg) || e.sKey !== msg.sKey)) return
    this.#dropHeldId(msg.id)
    if (!e) return
    this.#bury(e, Infinity) // that incarnation is over: no version of it is news
    this.#remove(e, msg)
  }

  #snap(msg) {
    const ids = new Set(msg.ids)
    // Other keys' snapshots still to come may bring back an object this one
    // no longer lists (it moved there): its removal waits for them.
    const wait = this.#awaiting.size > 0
    this.#awaiting.delete(msg.sKey)
    for (const id of [...(this.#index.get(msg.sKey) || [])]) {
      const e = this.#entries.get(id)
      if (!e || ids.has(id)) continue
      if (wait) this.#deferred.set(id, { e, sKey: msg.sKey, cause: msg })
      else this.#remove(e, msg)
    }
    if (wait && !this.#awaiting.size) this.#settle()
    // The snapshot's adds are all in: a held mod of this key whose object is
    // still unknown, or not in the key any more, has nothing to wait for.
    this.#dropHeld(msg.sKey, id => !ids.has(id) || !this.#entries.has(id))
    this.#events.emit("snap", msg.sKey, msg)
  }

  /**
   * Every awaited snap came, or snapTimeout passed: remove the objects that
   * a snap no longer listed and that are still where it left them (no add
   * brought them back, no mod moved them to another followed key).
   */
  #settle() {
    this.#stopSnapTimer()
    this.#awaiting.clear()
    const deferred = [...this.#deferred.values()]
    this.#deferred.clear()
    for (const { e, sKey, cause } of deferred) {
      // Not the same record: removed (and perhaps created anew) meanwhile.
      if (this.#entries.get(e.id) !== e || e.sKey !== sKey) continue
      this.#dropHeldId(e.id)
      this.#remove(e, cause)
    }
  }

  #stopSnapTimer() {
    if (this.#snapTimer === null) return
    this.#clearTimeout(this.#snapTimer)
    this.#snapTimer = null
  }

  // ---- bookkeeping -------------------------------------------------------

  #create(msg) {
    const Class = this.#types.get(msg.t)
    let obj
    if (Class) {
      try {
        obj = new Class(msg.id, msg.state, msg.t, msg)
      } catch (error) {
        this.#report("callback_error", `new ${msg.t}(${msg.id}) threw: ${error}`, { error, msg })
        return
      }
    } else {
      // A copy, so later diffs never write into the caller's message.
      obj = { id: msg.id, t: msg.t, sKey: msg.sKey, v: msg.v, state: { ...msg.state } }
    }
    // `state`: the object's fields as the gateway sent them, kept in place
    // (the plain object's own state, or a copy beside a class instance);
    // `view`: the cached immutable view, dropped on every change.
    const state = Class ? { ...msg.state } : obj.state
    const e = { id: msg.id, t: msg.t, sKey: msg.sKey, v: msg.v, i: msg.i, obj, plain: !Class, state, view: null }
    this.#gone.delete(e.id)
    this.#entries.set(e.id, e)
    this.#indexAdd(e.sKey, e.id)
    this.#events.emit("add", obj, msg)
  }

  #applyMod(e, msg) {
    e.v = msg.v
    const to = msg.nsKey ?? msg.sKey
    if (!this.#keys.has(to)) {
      // Moved out to a key we do not follow.
      this.#dropHeldId(e.id)
      this.#bury(e, msg.v)
      this.#remove(e, msg)
      return
    }
    this.#setKey(e, to)
    e.view = null
    if (e.plain) {
      syncPlain(e)
      Object.assign(e.obj.state, msg.diff)
    } else {
      Object.assign(e.state, msg.diff)
      this.#call(e.obj, "update", msg.diff, msg)
    }
    this.#events.emit("mod", e.obj, msg)
  }

  /**
   * Remember that `e` left the followed keys at version `v` (Infinity: it
   * was deleted). Only for a known incarnation: without one, an id deleted
   * and created again restarts its versions, and an old version cannot be
   * told from a new object.
   */
  #bury(e, v) {
    if (e.i === undefined || this.#goneLimit <= 0) return
    this.#gone.delete(e.id) // re-inserted last: the map stays oldest first
    this.#gone.set(e.id, { i: e.i, v })
    if (this.#gone.size > this.#goneLimit) this.#gone.delete(this.#gone.keys().next().value)
  }

  /** Whether `msg` is of an incarnation that left the followed keys at a version of `below` or more. */
  #isGone(msg, below) {
    const g = this.#gone.get(msg.id)
    return g !== undefined && msg.i === g.i && g.v >= below
  }

  #remove(e, cause) {
    this.#entries.delete(e.id)
    this.#indexDelete(e.sKey, e.id)
    this.#events.emit("rem", e.obj, cause)
    if (!e.plain) this.#call(e.obj, "teardown")
  }

  #setKey(e, sKey) {
    if (e.sKey === sKey) return
    e.view = null
    this.#indexDelete(e.sKey, e.id)
    e.sKey = sKey
    this.#indexAdd(sKey, e.id)
  }

  #indexAdd(sKey, id) {
    let ids = this.#index.get(sKey)
    if (!ids) this.#index.set(sKey, (ids = new Set()))
    ids.add(id)
  }

  #indexDelete(sKey, id) {
    const ids = this.#index.get(sKey)
    if (!ids) return
    ids.delete(id)
    if (!ids.size) this.#index.delete(sKey)
  }

  // ---- held mods and gap timers -----------------------------------------

  #hold(msg) {
    this.#held.hold(msg)
    this.#startGapTimer(msg.sKey)
  }

  /** Replay held mods of `id` that now follow on; drop those now stale. */
  #replayHeld(id) {
    // Most messages find nothing held: they cost one lookup.
    if (!this.#held.hasId(id)) return
    const keys = this.#held.keysOf(id)
    for (;;) {
      const e = this.#entries.get(id)
      if (!e) break
      this.#held.dropThrough(id, e.v)
      const next = this.#held.take(id, e.v + 1)
      if (!next) break
      this.#applyMod(e, next)
    }
    for (const key of keys) this.#stopGapTimerIfDone(key)
  }

  /** Drop held mods of `sKey` for which `pred(id)` holds. */
  #dropHeld(sKey, pred) {
    this.#held.dropKey(sKey, pred)
    this.#stopGapTimerIfDone(sKey)
  }

  #dropHeldId(id) {
    for (const key of this.#held.dropId(id)) this.#stopGapTimerIfDone(key)
  }

  #startGapTimer(sKey) {
    if (this.#gapTimers.has(sKey)) return
    const handle = this.#setTimeout(() => {
      this.#gapTimers.delete(sKey)
      if (!this.#held.hasKey(sKey)) return
      // Keep the timer going: if the resync does not close the gap either
      // (lost, refused, rate limited), ask again one window later.
      this.#startGapTimer(sKey)
      try {
        this.#onResync(sKey)
      } catch (error) {
        this.#report("callback_error", `onResync threw: ${error}`, { error })
      }
    }, this.#gapTimeout)
    this.#gapTimers.set(sKey, handle)
  }

  #stopGapTimerIfDone(sKey) {
    const handle = this.#gapTimers.get(sKey)
    if (handle === undefined || this.#held.hasKey(sKey)) return
    this.#clearTimeout(handle)
    this.#gapTimers.delete(sKey)
  }

  // ---- errors ------------------------------------------------------------

  /** Call an optional method of a registered instance, reporting throws. */
  #call(obj, method, ...args) {
    if (typeof obj[method] !== "function") return
    try {
      obj[method](...args)
    } catch (error) {
      this.#report("callback_error", `${method}() of ${obj.constructor?.name} threw: ${error}`, { error })
    }
  }

  #report(code, reason, extra) {
    try {
      this.#onError({ code, reason, ...extra })
    } catch (error) {
      // The error sink itself failed; the console is all that is left.
      console.error("synk-client: error handler threw", error)
    }
  }
}

/**
 * Whether `msg` (an add or a rem) is of another incarnation than the mirrored entry.
 * Only when both name one: adds of servers that predate incarnations have
 * no `i`, and then versions alone decide, as before.
 */
function isOtherIncarnation(e, msg) {
  return msg.i !== undefined && e.i !== undefined && msg.i !== e.i
}

/** Keep the plain object's public fields in step with its record. */
function syncPlain(e) {
  e.obj.sKey = e.sKey
  e.obj.v = e.v
}

/** Make `target` hold exactly `source`'s fields, keeping its identity. */
function replaceContents(target, source) {
  for (const k of Object.keys(target)) if (!(k in source)) delete target[k]
  Object.assign(target, source)
}
