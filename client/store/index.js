/**
 * Framework-neutral stores over a mirror, in the shape nanostores and
 * Svelte use: `subscribe(fn)` calls `fn` with the current value at once and
 * again on every change, and returns its unsubscribe function; `listen(fn)`
 * is the same without the first call; `get()` reads the value.
 *
 * Values are the mirror's immutable views (Mirror.view): a store's value is
 * the same (===) until something in it changes, and an unchanged object
 * keeps its view, so a UI can re-render only what changed. The React hooks
 * (../react) are built on these; Vue or Svelte bind them in a few lines.
 */
import { isValidKey } from "../mirror/index.js"

/** The mirror of a Synk, or the Mirror itself. */
function mirrorOf(source) {
  if (source && typeof source.view === "function") return source
  if (source && source.objects && typeof source.objects.view === "function") return source.objects
  throw new TypeError("expected a Synk or a Mirror")
}

/**
 * One listener set per mirror, told the id of every object that was added,
 * changed or removed. It listens to the mirror only while it has listeners.
 */
const hubs = new WeakMap()

function hubOf(mirror) {
  let hub = hubs.get(mirror)
  if (hub) return hub
  const listeners = new Set()
  /** obj → id: "rem" gives the object, and an instance need not have an id. */
  let idOf = new WeakMap()
  let detach = null
  const fire = id => {
    for (const fn of [...listeners]) fn(id)
  }
  const attach = () => {
    idOf = new WeakMap()
    for (const id of mirror.ids()) idOf.set(mirror.byId(id), id)
    const offs = [
      mirror.on("add", (obj, msg) => {
        idOf.set(obj, msg.id)
        fire(msg.id)
      }),
      mirror.on("mod", (obj, msg) => fire(msg.id)),
      mirror.on("rem", obj => {
        const id = idOf.get(obj)
        if (id !== undefined) fire(id)
      })
    ]
    detach = () => offs.forEach(off => off())
  }
  hub = {
    listen(fn) {
      if (!listeners.size) attach()
      const entry = id => fn(id) // a wrapper: the same fn may listen twice
      listeners.add(entry)
      return () => {
        if (!listeners.delete(entry) || listeners.size) return
        detach()
        detach = null
      }
    }
  }
  hubs.set(mirror, hub)
  return hub
}

/**
 * A readable store whose value `compute()` gives; `affects(id)` says
 * whether a change of object `id` may change it (checked while listened).
 */
function readable(mirror, compute, affects) {
  const listeners = new Set()
  let value
  let fresh = false // value is up to date (only while listened)
  let off = null

  const get = () => {
    if (!fresh) {
      value = compute(value)
      fresh = listeners.size > 0
    }
    return value
  }
  const onChange = id => {
    if (!affects(id, value)) return
    const before = value
    fresh = false
    if (get() === before) return
    for (const fn of [...listeners]) fn(value)
  }
  const listen = fn => {
    if (typeof fn !== "function") throw new TypeError("listener must be a function")
    const entry = v => fn(v)
    if (!listeners.size) {
      off = hubOf(mirror).listen(onChange)
      value = compute(value)
      fresh = true
    }
    listeners.add(entry)
    return () => {
      if (!listeners.delete(entry) || listeners.size) return
      off()
      off = null
      fresh = false
    }
  }
  const subscribe = fn => {
    const unsubscribe = listen(fn)
    fn(get())
    return unsubscribe
  }
  return { get, listen, subscribe }
}

const sameItems = (a, b) => a !== undefined && a.length === b.length && a.every((x, i) => x === b[i])

/**
 * The objects of one key (`select` a string), those a filter accepts
 * (`select` a function of the view), or every object (`select` omitted), as
 * a frozen array of views in the mirror's order. The array is the same
 * until an object enters, changes in, or leaves the selection.
 */
export function objectsStore(source, select) {
  const mirror = mirrorOf(source)
  const key = typeof select === "string" ? select : undefined
  const filter = typeof select === "function" ? select : undefined
  if (select !== undefined && key === undefined && filter === undefined) {
    throw new TypeError("select must be a key, a filter function, or omitted")
  }
  const matches = view => (key === undefined || view.sKey === key) && (!filter || filter(view))
  let ids = new Set() // the ids of the value, for affects()
  const compute = last => {
    const views = []
    for (const id of mirror.ids(key)) {
      const view = mirror.view(id)
      if (matches(view)) views.push(view)
    }
    if (sameItems(last, views)) return last
    ids = new Set(views.map(v => v.id))
    return Object.freeze(views)
  }
  const affects = id => {
    if (ids.has(id)) return true
    const view = mirror.view(id)
    return view !== undefined && matches(view)
  }
  return readable(mirror, compute, affects)
}

/** The view of one object, or undefined while it is not mirrored. */
export function objectStore(source, id) {
  const mirror = mirrorOf(source)
  if (typeof id !== "string") throw new TypeError("id must be a string")
  return readable(mirror, () => mirror.view(id), changed => changed === id)
}

/**
 * Keys held by holdKeys, per Synk: key → how many holders. The Synk's
 * subscription is the keys held here plus those it had from elsewhere
 * (setSubscription), updated once per microtask so that a release followed
 * at once by the same hold (React's StrictMode does that) changes nothing.
 */
const holders = new WeakMap()

/**
 * Add `keys` to the Synk's subscription until the returned function is
 * called (each hold counts: a key stays while any holder has it). Several
 * parts of a page can so each follow their keys. Throws TypeError on an
 * invalid key.
 */
export function holdKeys(synk, keys) {
  if (!synk || typeof synk.setSubscription !== "function") throw new TypeError("expected a Synk")
  if (keys == null || typeof keys[Symbol.iterator] !== "function" || typeof keys === "string") {
    throw new TypeError("keys must be an iterable of strings")
  }
  const list = [...new Set(keys)]
  for (const key of list) {
    if (!isValidKey(key)) throw new TypeError(`invalid subscription key: ${JSON.stringify(key)}`)
  }
  let h = holders.get(synk)
  if (!h) {
    h = { counts: new Map(), applied: new Set(), scheduled: false }
    holders.set(synk, h)
  }
  const state = h
  const schedule = () => {
    if (state.scheduled) return
    state.scheduled = true
    queueMicrotask(() => {
      state.scheduled = false
      if (synk.closed) return
      const held = new Set(state.counts.keys())
      const current = synk.objects.subscribedKeys()
      // Keys set from elsewhere stay; those this registry added and no
      // longer holds go.
      const next = current.filter(k => held.has(k) || !state.applied.has(k))
      for (const k of held) if (!next.includes(k)) next.push(k)
      state.applied = held
      if (next.length !== current.length || next.some((k, i) => k !== current[i])) synk.setSubscription(next)
    })
  }
  for (const key of list) state.counts.set(key, (state.counts.get(key) || 0) + 1)
  schedule()
  let released = false
  return () => {
    if (released) return
    released = true
    for (const key of list) {
      const n = state.counts.get(key) - 1
      if (n) state.counts.set(key, n)
      else state.counts.delete(key)
    }
    schedule()
  }
}
