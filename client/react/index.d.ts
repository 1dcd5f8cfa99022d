import type { ReactNode, ReactElement } from "react"
import type { Synk } from "../connection/index.js"
import type { Untyped, ViewOf } from "../mirror/index.js"
import type { Readable } from "../store/index.js"

export interface SynkProviderProps {
  /** The connection the hooks below read. */
  synk: Synk<any>
  children?: ReactNode
}

/** Gives `synk` to the hooks of the components below. */
export function SynkProvider(props: SynkProviderProps): ReactElement

/** The Synk of the nearest SynkProvider; throws without one. */
export function useSynk<Types extends object = Untyped>(): Synk<Types>

/**
 * Follow `keys` while mounted: they join the Synk's subscription (with the
 * other components' keys and those set by setSubscription), and leave it on
 * unmount or when they change (compared by content).
 */
export function useSubscription(keys: Iterable<string>): void

/** The current value of a store, re-rendering when it changes. */
export function useStore<T>(store: Readable<T>): T

/** Views of the objects of one key, in the mirror's order; the same array until one changes. */
export function useObjects<Types extends object = Untyped>(key: string): readonly ViewOf<Types>[]
/**
 * Views of the objects a filter accepts (a type guard narrows them). Keep
 * the filter stable (useCallback, or defined outside the component).
 */
export function useObjects<Types extends object, V extends ViewOf<Types>>(
  filter: (view: ViewOf<Types>) => view is V
): readonly V[]
export function useObjects<Types extends object = Untyped>(
  filter?: (view: ViewOf<Types>) => boolean
): readonly ViewOf<Types>[]

/** The view of one object, or undefined while it is not mirrored. */
export function useObject<Types extends object = Untyped>(id: string): ViewOf<Types> | undefined

/** The hooks typed with one map (see typedHooks). */
export interface TypedHooks<Types extends object> {
  SynkProvider(props: { synk: Synk<Types>; children?: ReactNode }): ReactElement
  useSynk(): Synk<Types>
  useSubscription(keys: Iterable<string>): void
  useStore<T>(store: Readable<T>): T
  useObjects(key?: string): readonly ViewOf<Types>[]
  useObjects<V extends ViewOf<Types>>(filter: (view: ViewOf<Types>) => view is V): readonly V[]
  useObjects(filter: (view: ViewOf<Types>) => boolean): readonly ViewOf<Types>[]
  useObject(id: string): ViewOf<Types> | undefined
}

/**
 * The hooks, typed with the generated map:
 * `export const { useObjects, useObject } = typedHooks<SynkTypes>()`.
 */
export function typedHooks<Types extends object>(): TypedHooks<Types>
