/**
 * Where and when the connection dials: the URL with what the client
 * declares (and its token) in the query, and the delay before a reconnect.
 * Pure functions, tested apart from any socket.
 */

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
 * `url` with `synk_resnap=1&synk_batch=1` (and `synk_compact=1`, unless
 * `compact` is false) in its query. `synk_resnap=1` tells the gateway that
 * this client takes `snap`, `resnap` and an `add` of an object it holds, so
 * the gateway may re-snapshot on the live socket instead of closing it;
 * `synk_batch=1` that it takes batch frames (a JSON array of messages in one
 * frame); `synk_compact=1` that it takes compact mods (handles in adds, and
 * a key's mods as `[sKey, [h, v, diff], ...]`). The original synk-js client
 * takes none of them.
 */
export function declaredUrl(url, { compact = true } = {}) {
  const declared = withParam(withParam(url, "synk_resnap", "1"), "synk_batch", "1")
  return compact ? withParam(declared, "synk_compact", "1") : declared
}

/**
 * `url` with `token=<token>` in its query (URL-encoded), replacing any token
 * parameter it had; `url` as is when `token` is null or undefined. Browsers
 * cannot set headers on a WebSocket: the query is where the gateway's
 * `authenticate(handshake)` hook finds it (`handshake.query["token"]`).
 */
export function tokenUrl(url, token) {
  if (token === null || token === undefined) return url
  return withParam(url, "token", token)
}

/** `url` with `name=value` appended to its query, dropping earlier `name` parameters. */
function withParam(url, name, value) {
  const hash = url.indexOf("#")
  const base = hash === -1 ? url : url.slice(0, hash)
  const fragment = hash === -1 ? "" : url.slice(hash)
  const q = base.indexOf("?")
  const path = q === -1 ? base : base.slice(0, q)
  const params = q === -1 ? [] : base.slice(q + 1).split("&").filter(part => {
    if (!part) return false
    const key = part.split("=", 1)[0]
    return key !== name && key !== encodeURIComponent(name)
  })
  params.push(`${encodeURIComponent(name)}=${encodeURIComponent(value)}`)
  return `${path}?${params.join("&")}${fragment}`
}
