/**
 * What the mirror accepts: subscription keys, key lists, and the shape of
 * the gateway's object messages (`add`, `mod`, `rem`, `snap`). Pure checks,
 * no state: a message that fails them is reported, never applied.
 */
import { isRecord } from "../shared/index.js"

/** Subscription keys, as PROTOCOL.md defines them. */
const KEY = /^[A-Za-z0-9_.:|/@#+=,~-]{1,200}$/

/** True if `key` is a well-formed subscription key. */
export function isValidKey(key) {
  return typeof key === "string" && KEY.test(key)
}

export const isString = x => typeof x === "string"
const isId = x => typeof x === "string" && x.length > 0
const isVersion = x => Number.isSafeInteger(x) && x >= 0

/** A string spreads into characters: almost surely a key passed without its array. */
export function assertKeys(keys) {
  if (keys == null || typeof keys[Symbol.iterator] !== "function" || isString(keys)) {
    throw new TypeError("keys must be an iterable of strings")
  }
}

/**
 * Returns why `msg` is not a well-formed object message, or "" if it is.
 * The checks cover what the mirror relies on; `t` of `rem` is not used, so
 * it is only checked when present.
 */
export function shapeProblem(msg) {
  const { method } = msg
  if (method === "snap") {
    if (!isString(msg.sKey)) return "snap without a string sKey"
    if (!Array.isArray(msg.ids) || !msg.ids.every(isId)) {
      return "snap ids must be an array of strings"
    }
    return ""
  }
  if (!isId(msg.id)) return `${method} without a string id`
  if (!isString(msg.sKey)) return `${method} without a string sKey`
  if (method === "rem") {
    return msg.t === undefined || isString(msg.t) ? "" : "rem with a non-string t"
  }
  if (!isString(msg.t)) return `${method} without a string t`
  if (!isVersion(msg.v)) return `${method} v must be a non-negative integer`
  if (method === "add") {
    if (!isRecord(msg.state)) return "add state must be an object"
    if (msg.psKey !== undefined && !isString(msg.psKey)) return "add psKey must be a string"
    if (msg.i !== undefined && !isString(msg.i)) return "add i must be a string"
  } else {
    if (!isRecord(msg.diff)) return "mod diff must be an object"
    if (msg.nsKey !== undefined && !isString(msg.nsKey)) return "mod nsKey must be a string"
  }
  return ""
}

/** The object messages, and the mirror's events, which are named after them. */
export const METHODS = new Set(["add", "mod", "rem", "snap"])
