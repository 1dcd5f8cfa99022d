import type { Unsubscribe } from "../emitter/index.js"
import type { Mirror, Untyped } from "../mirror/index.js"

/**
 * The subset of the standard WebSocket that synk uses. Handlers receive
 * events with `data` (message) and `code` / `reason` / `wasClean` (close);
 * typed loosely so both the DOM's and the "ws" package's classes fit.
 */
export interface WebSocketLike {
  readonly readyState: number
  send(data: string): void
  close(code?: number, reason?: string): void
  onopen: ((event: any) => void) | null
  onmessage: ((event: any) => void) | null
  onclose: ((event: any) => void) | null
  onerror: ((event: any) => void) | null
}

export interface WebSocketClass {
  new (url: string): WebSocketLike
}

/**
 * Where to connect: a ws:// or wss:// URL, or a function (sync or async)
 * returning one, called before every connection attempt (so it may carry a
 * fresh token). If it throws or rejects, "error" reports code "url" and the
 * attempt is retried after the backoff.
 */
export type SynkUrl = string | URL | (() => string | URL | PromiseLike<string | URL>)

/**
 * A token sent as the `token` query parameter (browsers cannot set headers
 * on a WebSocket; the gateway's `authenticate(handshake)` reads
 * `handshake.query["token"]`): a string, or a function (sync or async)
 * returning one, called before every connection attempt. null or undefined
 * leaves the parameter out. If the function throws or rejects (or returns
 * something else), "error" reports code "token" and the attempt is retried
 * after the backoff.
 */
export type SynkToken = string | (() => string | null | undefined | PromiseLike<string | null | undefined>)

export interface SynkOptions {
  /** See SynkToken. Replaces a `token` parameter the URL already has. */
  token?: SynkToken | null
  /** WebSocket class; default globalThis.WebSocket (pass `ws`'s in Node). */
  WebSocket?: WebSocketClass
  /** How long a version gap may stay open before a resync, in ms. Default 500. */
  gapTimeout?: number
  /**
   * After a (re)connect, a subscription change that adds keys, or a resync,
   * how long objects missing from one key's `snap` may wait for the other
   * requested keys' snapshots (they may have moved there) before they are
   * removed, in ms. Default 5000.
   */
  snapTimeout?: number
  /** Departed objects remembered against stale snapshots (see MirrorOptions.goneLimit). Default 10000. */
  goneLimit?: number
  /**
   * Reconnect delay bounds in ms, default {min: 100, max: 5000}. The delay
   * is uniform in [0, min(max, min * 2^attempt)).
   */
  backoff?: { min?: number; max?: number }
  /** Custom messages kept while disconnected. Default 1000. */
  maxQueue?: number
  /**
   * Declare compact mods (`synk_compact=1`): most mods arrive in about a
   * third of the bytes (PROTOCOL.md, "Compact mods"). Default true; false
   * gets every message as plain JSON (for reading frames while debugging).
   */
  compact?: boolean
  /** Injectable for tests; default Math.random. */
  random?: () => number
  /** Injectable for tests; default the global timers. */
  setTimeout?: (fn: () => void, ms: number) => unknown
  clearTimeout?: (handle: any) => void
}

/**
 * Close codes after which the client stops for good (no reconnect;
 * `closed` becomes true), with the reason reported when the close has none:
 * 4401 "unauthorized" (the gateway's `authenticate` refused the
 * connection), 4403 "origin not allowed" (the page's origin), 1008 "policy
 * violation". Every other close code reconnects after the backoff.
 */
export type FinalCloseCode = 1008 | 4401 | 4403

/**
 * Error codes. A number is a final close code (see FinalCloseCode): the
 * gateway refused the connection, `reason` is the close's reason, and the
 * client has stopped. From the gateway (its `error` message, as {code, reason}):
 * "bad_json", "bad_message", "bad_key", "too_many_keys", "forbidden",
 * "not_subscribed", "rate_limited", "unknown_method", "unavailable", "internal".
 * From the client:
 * - "bad_frame": a frame that is not a JSON object with a string method
 *   (`data` holds it);
 * - "bad_shape": a known message with missing or wrongly typed fields
 *   (`msg` holds it; it was dropped);
 * - "callback_error": a listener or registered class threw (`error`);
 * - "socket_error": the WebSocket reported an error or could not be created;
 * - "queue_full": send() dropped a message (`method`);
 * - "closed": send() after close() (`method`);
 * - "queue_dropped": close() dropped `count` queued messages;
 * - "internal_error": a bug in synk-client;
 * - "url": the url function threw, rejected or returned no string or URL
 *   (`error` holds what it threw); retried `delay` ms later;
 * - "token": the same for the token function.
 */
export interface SynkError {
  code: string | FinalCloseCode
  reason: string
  /** "url" and "token": milliseconds until the next connection attempt. */
  delay?: number
  data?: unknown
  msg?: unknown
  error?: unknown
  method?: string
  count?: number
}

export interface CloseInfo {
  code: number
  reason: string
  wasClean: boolean
  /**
   * Milliseconds until the reconnect attempt; null after a final close code
   * (4401, 4403, 1008), which is followed by an "error" and no reconnect.
   */
  delay: number | null
}

/** A custom message: any method other than the protocol's own. */
export interface CustomMessage {
  method: string
  [field: string]: unknown
}

export interface SynkEvents {
  /** The socket opened; the subscription and queued sends have gone out. */
  open(): void
  /**
   * The socket closed (or a connection attempt failed) other than through
   * close(); a reconnect is scheduled `info.delay` ms later, unless the code
   * is final (4401, 4403, 1008: `delay` is null, an "error" with the code
   * follows, and the client has stopped).
   */
  close(info: CloseInfo): void
  error(error: SynkError): void
  /** A custom message from the gateway or the simulation. */
  message(msg: CustomMessage): void
  /** The gateway's `hello`: `synk.clientId` is now set. */
  hello(clientId: string): void
}

/** Exponential backoff with full jitter; see SynkOptions.backoff. */
export function backoffDelay(
  attempt: number,
  backoff: { min: number; max: number },
  random?: () => number
): number

/**
 * One connection to a gateway and the mirror it feeds. `Types` is the map
 * `synk types` generates (`new Synk<SynkTypes>(url)`): it types the
 * mirror's objects, states, diffs and registered classes. Without it states
 * are `Record<string, unknown>`.
 */
export class Synk<Types extends object = Untyped> {
  /**
   * Connects at once (once an async url or token function resolves), and
   * keeps reconnecting until close() or a final close code.
   */
  constructor(url: SynkUrl, options?: SynkOptions)
  /** The mirror of the subscribed objects. */
  readonly objects: Mirror<Types>
  /** From the gateway's `hello`; null while not connected. */
  readonly clientId: string | null
  /** True while the socket is open. */
  readonly connected: boolean
  /**
   * True once stopped for good: close(), a final close code (4401, 4403,
   * 1008), or a WebSocket that could not be created.
   */
  readonly closed: boolean
  on<E extends keyof SynkEvents>(event: E, fn: SynkEvents[E]): Unsubscribe
  /**
   * The desired set of keys. Throws TypeError on a malformed key. Objects of
   * dropped keys are removed (rem + teardown) immediately.
   */
  setSubscription(keys: Iterable<string>): void
  /**
   * Send `{method, ...payload}`: now if connected, else queued (up to
   * maxQueue). Returns false, and emits "error", if the message was dropped.
   * Throws TypeError for a reserved or empty method or a non-object payload.
   */
  send(method: string, payload?: Record<string, unknown>): boolean
  /** Close for good; mirrored objects are kept as last seen. */
  close(): void
}
