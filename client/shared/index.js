/**
 * Small helpers the connection and the mirror both need. Internal: not
 * exported from the package's entry point.
 */

export const isRecord = x => x !== null && typeof x === "object" && !Array.isArray(x)

/**
 * `options.setTimeout` / `options.clearTimeout`, or the global timers, as
 * functions safe to call unbound.
 */
export function timers(options = {}) {
  const st = options.setTimeout || globalThis.setTimeout
  const ct = options.clearTimeout || globalThis.clearTimeout
  // Browsers throw "Illegal invocation" when the native timer functions get
  // another `this` (such as the options object they came in).
  return { setTimeout: (fn, ms) => st(fn, ms), clearTimeout: handle => ct(handle) }
}
