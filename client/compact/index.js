/**
 * Compact mods (PROTOCOL.md, "Compact mods"): a client that declares
 * `synk_compact=1` gets, for each object, an `add` carrying a small integer
 * `h` (the object's handle), then most of the object's mods as a key's
 * mods, `[sKey, [h, v, diff], [h, v, diff], ...]`, about a third of the
 * bytes of full mods. This module keeps a connection's handles and turns a
 * key's mods back into the full mods they stand for, which the mirror
 * applies as any other. Internal: not exported from the package's entry.
 */
import { isRecord } from "../shared/index.js"

/**
 * Handles kept at most. Past it the oldest learned goes: a key's mod naming
 * a forgotten handle is dropped and its key snapshotted again (resync).
 */
export const MOST_HANDLES = 100_000

export class Handles {
  /** handle -> {t, id, i} of the object its add named */
  #objects = new Map()
  /** object id -> its handle: a `rem` ends it */
  #byId = new Map()
  #most

  constructor(most = MOST_HANDLES) {
    this.#most = most
  }

  /** How many handles are known. */
  get size() {
    return this.#objects.size
  }

  /**
   * An `add` that carries a handle (`h`): learn it, and return the add
   * without it (what the mirror and listeners see is the protocol's add).
   * Any other message is returned as it is.
   */
  learn(msg) {
    if (!isRecord(msg) || msg.method !== "add" || !Object.hasOwn(msg, "h")) return msg
    const { h, ...add } = msg
    if (Number.isSafeInteger(h) && typeof add.id === "string") {
      const before = this.#byId.get(add.id)
      if (before !== undefined && before !== h) this.#objects.delete(before)
      this.#objects.delete(h) // learned again: now the newest
      this.#objects.set(h, { t: add.t, id: add.id, i: add.i })
      this.#byId.set(add.id, h)
      if (this.#objects.size > this.#most) {
        const [oldest, object] = this.#objects.entries().next().value
        this.#objects.delete(oldest)
        if (this.#byId.get(object.id) === oldest) this.#byId.delete(object.id)
      }
    }
    return add
  }

  /** A `rem` ends its object's incarnation: its handle is of no more use. */
  forget(msg) {
    if (!isRecord(msg) || msg.method !== "rem" || typeof msg.id !== "string") return
    const h = this.#byId.get(msg.id)
    if (h === undefined) return
    const object = this.#objects.get(h)
    if (object && object.i !== undefined && msg.i !== undefined && object.i !== msg.i) return // another incarnation's rem
    this.#objects.delete(h)
    this.#byId.delete(msg.id)
  }

  /**
   * A key's mods, `[sKey, [h, v, diff], ...]`: the full mods they stand for,
   * in order; `unknown` counts entries whose handle is not known (dropped);
   * `problem` says what is wrong with an item of the wrong shape (null: none).
   */
  expand(item) {
    const sKey = item[0]
    const mods = []
    let unknown = 0
    if (typeof sKey !== "string" || item.length < 2) {
      return { sKey, mods, unknown, problem: "a key's mods without a key and at least one mod" }
    }
    for (let n = 1; n < item.length; n++) {
      const entry = item[n]
      if (!Array.isArray(entry) || entry.length !== 3 || !Number.isSafeInteger(entry[0]) || !Number.isSafeInteger(entry[1]) || !isRecord(entry[2])) {
        return { sKey, mods, unknown, problem: `a key's mods whose entry ${n} is not [handle, version, diff]` }
      }
      const object = this.#objects.get(entry[0])
      if (object === undefined) {
        unknown++
        continue
      }
      const mod = { method: "mod", t: object.t, id: object.id, sKey, v: entry[1], diff: entry[2] }
      if (object.i !== undefined) mod.i = object.i
      mods.push(mod)
    }
    return { sKey, mods, unknown, problem: null }
  }

  /** A new connection: the gateway's handles of the last one mean nothing on it. */
  clear() {
    this.#objects.clear()
    this.#byId.clear()
  }
}
