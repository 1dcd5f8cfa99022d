/**
 * Mods that arrived ahead of their version, by object id and version, with
 * a count per key: whether a key still has held mods (which keeps its gap
 * timer going) is asked on every message that touches them, and must not
 * cost a scan of everything held.
 */
export class HeldMods {
  /** id → Map(v → mod) */
  #byId = new Map()
  /** sKey → number of held mods whose sKey it is (absent when 0) */
  #perKey = new Map()

  /** Hold `msg`, unless a mod of its id and version is held already. */
  hold(msg) {
    let byV = this.#byId.get(msg.id)
    if (!byV) this.#byId.set(msg.id, (byV = new Map()))
    if (byV.has(msg.v)) return
    byV.set(msg.v, msg)
    this.#perKey.set(msg.sKey, (this.#perKey.get(msg.sKey) || 0) + 1)
  }

  /** Whether any mod of `sKey` is held. */
  hasKey(sKey) {
    return this.#perKey.has(sKey)
  }

  /** Whether any mod of `id` is held. */
  hasId(id) {
    return this.#byId.has(id)
  }

  /** The keys of the mods held for `id` (a new set, empty if none). */
  keysOf(id) {
    const keys = new Set()
    for (const m of this.#byId.get(id)?.values() || []) keys.add(m.sKey)
    return keys
  }

  /** Remove and return the mod held for `id` at version `v`, if any. */
  take(id, v) {
    const m = this.#byId.get(id)?.get(v)
    if (m) this.#delete(id, m)
    return m
  }

  /** Drop the mods held for `id` at version `v` or below (now stale). */
  dropThrough(id, v) {
    const byV = this.#byId.get(id)
    if (!byV) return
    for (const m of [...byV.values()]) if (m.v <= v) this.#delete(id, m)
  }

  /** Drop every mod held for `id`; returns their keys. */
  dropId(id) {
    const byV = this.#byId.get(id)
    if (!byV) return []
    const keys = this.keysOf(id)
    for (const m of [...byV.values()]) this.#delete(id, m)
    return keys
  }

  /** Drop the mods of `sKey` held for ids for which `pred(id)` holds. */
  dropKey(sKey, pred) {
    if (!this.hasKey(sKey)) return
    for (const [id, byV] of [...this.#byId]) {
      if (!pred(id)) continue
      for (const m of [...byV.values()]) if (m.sKey === sKey) this.#delete(id, m)
    }
  }

  clear() {
    this.#byId.clear()
    this.#perKey.clear()
  }

  #delete(id, m) {
    const byV = this.#byId.get(id)
    byV.delete(m.v)
    if (!byV.size) this.#byId.delete(id)
    const n = this.#perKey.get(m.sKey) - 1
    if (n) this.#perKey.set(m.sKey, n)
    else this.#perKey.delete(m.sKey)
  }
}
