/**
 * A tiny event emitter in the style of nanoevents: `on()` returns its own
 * unsubscribe function, so callers never have to keep the listener around.
 *
 * Listener exceptions are caught and handed to `onListenerError` when one is
 * given: a throwing UI callback must not break the mirror's bookkeeping or
 * escape from a WebSocket handler.
 */
export function createEmitter(onListenerError) {
  /** @type {Map<string, Function[]>} */
  const events = new Map()

  return {
    on(event, fn) {
      if (typeof fn !== "function") {
        throw new TypeError(`listener for "${event}" must be a function`)
      }
      // Copy-on-write so that (un)subscribing inside a listener never
      // disturbs an emit that is iterating the current array.
      events.set(event, [...(events.get(event) || []), fn])
      return () => {
        const list = events.get(event) || []
        const next = list.filter(f => f !== fn)
        if (next.length) events.set(event, next)
        else events.delete(event)
      }
    },

    emit(event, ...args) {
      const list = events.get(event)
      if (!list) return
      for (const fn of list) {
        if (!onListenerError) {
          fn(...args)
          continue
        }
        try {
          fn(...args)
        } catch (error) {
          onListenerError(error, event)
        }
      }
    },

    /** How many listeners `event` has (used to decide whether to warn). */
    count(event) {
      return (events.get(event) || []).length
    }
  }
}
