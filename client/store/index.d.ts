import type { Unsubscribe } from "../emitter/index.js"
import type { Mirror, Untyped, ViewOf } from "../mirror/index.js"
import type { Synk } from "../connection/index.js"

/**
 * A store in the shape nanostores and Svelte use. `subscribe(fn)` calls
 * `fn` with the current value at once and on every change; `listen(fn)`
 * only on changes; both return their unsubscribe function. The value is
 * the same (===) until it changes. The methods need no `this`.
 */
export interface Readable<T> {
  get(): T
  subscribe(fn: (value: T) => void): Unsubscribe
  listen(fn: (value: T) => void): Unsubscribe
}

/** Where a store reads: a Synk (its mirror) or a Mirror. */
export type StoreSource<Types extends object = Untyped> = Synk<Types> | Mirror<Types>

/**
 * Views (Mirror.view) of the objects of one key, in the mirror's order: a
 * frozen array, the same until an object enters, changes in, or leaves the key.
 */
export function objectsStore<Types extends object = Untyped>(
  source: StoreSource<Types>,
  key: string
): Readable<readonly ViewOf<Types>[]>
/** Views of the objects the filter accepts (a type guard narrows them), across keys. */
export function objectsStore<Types extends object, V extends ViewOf<Types>>(
  source: StoreSource<Types>,
  filter: (view: ViewOf<Types>) => view is V
): Readable<readonly V[]>
export function objectsStore<Types extends object = Untyped>(
  source: StoreSource<Types>,
  filter?: (view: ViewOf<Types>) => boolean
): Readable<readonly ViewOf<Types>[]>

/** The view of one object, or undefined while it is not mirrored. */
export function objectStore<Types extends object = Untyped>(
  source: StoreSource<Types>,
  id: string
): Readable<ViewOf<Types> | undefined>

/**
 * Add `keys` to the Synk's subscription until the returned function is
 * called. Holds count per key; keys set with setSubscription stay; changes
 * are applied once per microtask. Throws TypeError on an invalid key.
 */
export function holdKeys(synk: Synk<any>, keys: Iterable<string>): Unsubscribe
