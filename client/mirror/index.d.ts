import type { Unsubscribe } from "../emitter/index.js"

/** Object state as sent by the gateway: every field of the object. */
export type State = Record<string, unknown>

/**
 * The map from type keys to state types that types a mirror, as `synk
 * types` generates it: `interface SynkTypes { "agent": AgentState; ... }`.
 * Without one, every type key is a string and every state a `State`.
 */
export type Untyped = { [t: string]: State }

/** The type keys of a type map. */
export type TypeKey<Types> = keyof Types & string

export interface AddMessage<S = State, K extends string = string> {
  method: "add"
  t: K
  id: string
  sKey: string
  v: number
  state: S
  /**
   * The object's incarnation. Versions count within one incarnation; an add
   * of another incarnation than the mirrored one replaces the object's state
   * whatever its version. Absent from servers that predate it.
   */
  i?: string
  /** The key the object just moved in from. */
  psKey?: string
}

export interface ModMessage<S = State, K extends string = string> {
  method: "mod"
  t: K
  id: string
  sKey: string
  v: number
  /** Only the fields that changed. */
  diff: Partial<S>
  /** The object's incarnation (see AddMessage.i); the mirror does not use it. */
  i?: string
  /** The key the object moved to, out of `sKey`. */
  nsKey?: string
}

export interface RemMessage {
  method: "rem"
  /** Checked to be a string when present; the mirror does not need it. */
  t?: string
  id: string
  sKey: string
  /**
   * The object's incarnation (see AddMessage.i). A rem of another
   * incarnation or key than the mirrored object's is ignored.
   */
  i?: string
}

export interface SnapMessage {
  method: "snap"
  sKey: string
  ids: string[]
}

/** An `add` of any type of the map (a union that narrows on `t`). */
export type AddMessageOf<Types, K extends TypeKey<Types> = TypeKey<Types>> =
  K extends TypeKey<Types> ? AddMessage<Types[K], K> : never
/** A `mod` of any type of the map (a union that narrows on `t`). */
export type ModMessageOf<Types, K extends TypeKey<Types> = TypeKey<Types>> =
  K extends TypeKey<Types> ? ModMessage<Types[K], K> : never

/** Cause given to "rem" listeners when the client unsubscribed the key. */
export interface UnsubscribeCause {
  method: "unsubscribe"
  sKey: string
}

export type ObjectMessage = AddMessage | ModMessage | RemMessage | SnapMessage

/** What the mirror keeps for objects whose type has no registered class. */
export interface PlainObject<S = State, K extends string = string> {
  id: string
  t: K
  /** The key the object is in now. */
  sKey: string
  /** The version of `state`. */
  v: number
  /** Updated in place: the same object for the object's whole life. */
  state: S
}

/**
 * A mirrored object of the map's type `K` (default: of any of its types, a
 * union that narrows on `t`), in the shape of a PlainObject. Objects of a
 * type with a registered class are instances of that class: give their type
 * to the reading methods (`byId<Agent>(id)`) or narrow with `instanceof`.
 */
export type ObjectOf<Types, K extends TypeKey<Types> = TypeKey<Types>> =
  K extends TypeKey<Types> ? PlainObject<Types[K], K> : never

/**
 * An immutable snapshot of a mirrored object (see Mirror.view): frozen,
 * with a frozen copy of its state, and the same until the object changes.
 */
export interface View<S = State, K extends string = string> {
  readonly id: string
  readonly t: K
  readonly sKey: string
  readonly v: number
  /** The incarnation, once an add named one. */
  readonly i?: string
  readonly state: Readonly<S>
  /** The live mirrored object: the registered class's instance, or the PlainObject. */
  readonly obj: unknown
}

/** A view of the map's type `K` (default: of any of its types, a union that narrows on `t`). */
export type ViewOf<Types, K extends TypeKey<Types> = TypeKey<Types>> =
  K extends TypeKey<Types> ? View<Types[K], K> : never

/**
 * A class registered for a type whose state is `S`. No base class is
 * needed; `update` and `teardown` are optional.
 */
export interface SyncedClass<T extends object = object, S = State, K extends string = string> {
  new (id: string, state: S, t: K, msg: AddMessage<S, K>): T & Synced<S>
}

export interface Synced<S = State> {
  /**
   * Called with the changed fields of a `mod` (`msg.method === "mod"`), or
   * with the whole new state when an `add` updates an object already
   * mirrored (`msg.method === "add"`): at a newer version (after a reconnect
   * or resync), or of another incarnation (the id was re-created, or the
   * store reset), whatever its version.
   */
  update?(diff: Partial<S>, msg: AddMessage<S> | ModMessage<S>): void
  /** Called once, after the "rem" event, when the object leaves the mirror. */
  teardown?(): void
}

/** The mirror's bookkeeping record of one object. */
export interface Entry<O = any> {
  id: string
  t: string
  sKey: string
  v: number
  /** The incarnation `v` counts in: the `i` of the latest add, once one had it. */
  i?: string
  /** The registered class's instance, or a PlainObject. */
  obj: O
}

export interface MirrorEvents<Types = Untyped> {
  /** A new object entered the mirror. */
  add(obj: ObjectOf<Types>, msg: AddMessageOf<Types>): void
  /**
   * A mirrored object changed: a `mod` applied (possibly a move to another
   * subscribed key, see `msg.nsKey`), or an `add` at a newer version or of
   * another incarnation updated it in place.
   */
  mod(obj: ObjectOf<Types>, msg: ModMessageOf<Types> | AddMessageOf<Types>): void
  /**
   * An object left the mirror; teardown() follows. `cause` is the message
   * that removed it: `rem`, a `mod` moving it to an unsubscribed key, the
   * `snap` that no longer lists it (applied once the other snapshots
   * requested with it are in, see `Mirror.expectSnaps`), or the client's own
   * unsubscription.
   */
  rem(obj: ObjectOf<Types>, cause: RemMessage | ModMessageOf<Types> | SnapMessage | UnsubscribeCause): void
  /**
   * A key's snapshot is complete. Its removals were applied, or, while
   * other snapshots requested with it are awaited, are waiting for them.
   */
  snap(sKey: string, msg: SnapMessage): void
}

/** Client-side problems the mirror reports. */
export interface MirrorError {
  /** "bad_shape": a malformed object message (dropped);
   *  "callback_error": a class or listener threw (the mirror carried on). */
  code: "bad_shape" | "callback_error"
  reason: string
  msg?: unknown
  error?: unknown
}

export interface MirrorOptions {
  /** How long a version gap may stay open before a resync, in ms. Default 500. */
  gapTimeout?: number
  /**
   * How long removals decided by a `snap` may wait for the other snapshots
   * awaited with it (see `expectSnaps`), in ms, counted from the first
   * request of the batch. Default 5000.
   */
  snapTimeout?: number
  /**
   * How many objects that left the followed keys the mirror remembers (id,
   * incarnation and the version they left at), so that an older snapshot
   * of another key cannot bring them back. Default 10000; 0 disables.
   */
  goneLimit?: number
  /** Timer functions, injectable for tests. Default: the global ones. */
  setTimeout?: (fn: () => void, ms: number) => unknown
  clearTimeout?: (handle: any) => void
  /** Asked to send `{"method":"resync","keys":[sKey]}`. */
  onResync?: (sKey: string) => void
  onError?: (error: MirrorError) => void
}

/** True if `key` is a well-formed subscription key (1-200 allowed chars). */
export function isValidKey(key: unknown): key is string

/**
 * The mirror of the subscribed objects; `Types` (see Untyped) types their
 * states, diffs and registered classes.
 */
export class Mirror<Types extends object = Untyped> {
  constructor(options?: MirrorOptions)
  /**
   * Mirror objects of type `t` as instances of `Class` (from now on); its
   * constructor gets the type's state, its `update` a Partial of it.
   */
  register<K extends TypeKey<Types>, T extends object>(t: K, Class: SyncedClass<T, Types[K], K>): void
  on<E extends keyof MirrorEvents<Types>>(event: E, fn: MirrorEvents<Types>[E]): Unsubscribe

  // Reading. `O` overrides the objects' type, for registered classes.

  /** Every mirrored object, of every key (a new array). */
  all<O = ObjectOf<Types>>(): O[]
  /** Iterates every mirrored object (those there when iteration began). */
  [Symbol.iterator](): IterableIterator<ObjectOf<Types>>
  /** The ids of every mirrored object, or of those in `sKey` (a new array). */
  ids(sKey?: string): string[]
  /** The objects mirrored in `sKey` (a new array). */
  byKey<O = ObjectOf<Types>>(sKey: string): O[]
  /** The registered instance or the PlainObject with this id, or undefined. */
  byId<O = ObjectOf<Types>>(id: string): O | undefined
  /** The same as byId (the name the client always had). */
  get<O = ObjectOf<Types>>(id: string): O | undefined
  has(id: string): boolean
  /**
   * An immutable view of the object: the same (===) until it changes (a
   * new version or key), whatever its class; undefined if not mirrored.
   */
  view(id: string): ViewOf<Types> | undefined
  /** A copy of the bookkeeping record, or undefined. */
  entry<O = ObjectOf<Types>>(id: string): Entry<O> | undefined
  /** Number of mirrored objects. */
  readonly size: number
  /** The subscribed keys, in the order they were given. */
  subscribedKeys(): string[]
  /**
   * The same as subscribedKeys(): the subscribed keys, not object ids (the
   * name the client always had).
   * @deprecated Use subscribedKeys(), whose name says what it returns.
   */
  keys(): string[]
  isSubscribed(sKey: string): boolean
  /**
   * Replace the subscribed set; removes the objects of dropped keys.
   * Throws TypeError on an invalid key. Returns the difference.
   */
  setKeys(keys: Iterable<string>): { add: string[]; remove: string[] }
  /**
   * Say that the gateway was just asked to snapshot `keys` together (the
   * whole subscription on a (re)connect, the keys a subscription change
   * added, a resync); `Synk` calls it. Until each of them has sent its
   * `snap`, or `snapTimeout` ms pass, objects that a snap no longer lists
   * stay mirrored; then those that no `add` brought back meanwhile, and that
   * no `mod` moved to another followed key, are removed. An object that
   * moved between two of these keys is thus updated in place ("mod"), never
   * removed and added anew. Keys not subscribed are ignored; throws
   * TypeError if `keys` is not an iterable (or is a string).
   */
  expectSnaps(keys: Iterable<string>): void
  /**
   * Apply a gateway message. Returns false if it is not add/mod/rem/snap.
   * Never throws.
   */
  handle(msg: unknown): boolean
  /**
   * Drop held mods, stop gap timers and stop awaiting snapshots (the
   * connection went away). Objects whose removal waited on a snapshot stay;
   * the next connection's snapshots decide again.
   */
  resetPending(): void
}
