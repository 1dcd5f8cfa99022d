/**
 * synk-client/react: React bindings for one Synk connection, built on the
 * framework-neutral stores (../store) and useSyncExternalStore. Plain ES
 * module JS (no JSX, no build step); React is a peer dependency, imported
 * as "react" (a bundler, or an import map in the browser, resolves it).
 *
 * Hooks return the mirror's immutable views (Mirror.view): a view is the
 * same object until its object changes, so a component re-renders only
 * when what it reads changed, and React.memo rows of a list re-render only
 * for the objects that changed.
 */
import React from "react"
import { holdKeys, objectStore, objectsStore } from "../store/index.js"

const { createContext, createElement, useContext, useEffect, useMemo, useSyncExternalStore } = React

const SynkContext = createContext(null)

/** Gives `synk` (one Synk connection) to the hooks of the components below. */
export function SynkProvider({ synk, children }) {
  return createElement(SynkContext.Provider, { value: synk }, children)
}

/** The Synk of the nearest SynkProvider; throws without one. */
export function useSynk() {
  const synk = useContext(SynkContext)
  if (!synk) throw new Error("synk-client/react: no <SynkProvider synk={...}> above this component")
  return synk
}

/**
 * Follow `keys` while the component is mounted: they join the Synk's
 * subscription (with the keys of every other useSubscription, and those set
 * by setSubscription) and leave it on unmount or when `keys` change.
 */
export function useSubscription(keys) {
  const synk = useSynk()
  // By content: a new array of the same keys each render changes nothing.
  const sig = JSON.stringify([...keys])
  useEffect(() => holdKeys(synk, JSON.parse(sig)), [synk, sig])
}

/** The current value of a store (store/index.js), re-rendering when it changes. */
export function useStore(store) {
  return useSyncExternalStore(store.listen, store.get, store.get)
}

/**
 * Views of the objects of one key (`select` a string), of those a filter
 * accepts (a function of the view: keep it stable, e.g. with useCallback,
 * or the store is made anew each render), or of every object (omitted).
 */
export function useObjects(select) {
  const synk = useSynk()
  const store = useMemo(() => objectsStore(synk, select), [synk, select])
  return useStore(store)
}

/** The view of one object, or undefined while it is not mirrored. */
export function useObject(id) {
  const synk = useSynk()
  const store = useMemo(() => objectStore(synk, id), [synk, id])
  return useStore(store)
}

/**
 * The same hooks, for TypeScript typed with the generated map:
 * `export const { useObjects, useObject } = typedHooks<SynkTypes>()`.
 * At run time it returns the hooks above.
 */
export function typedHooks() {
  return { SynkProvider, useSynk, useSubscription, useStore, useObjects, useObject }
}
