/** Returned by every `on()`: call it to remove that listener. */
export type Unsubscribe = () => void

export interface Emitter<Events extends { [E in keyof Events]: (...args: any[]) => void }> {
  /** Add a listener; returns the function that removes it. */
  on<E extends keyof Events>(event: E, fn: Events[E]): Unsubscribe
  /** Call every listener of `event`, in the order they were added. */
  emit<E extends keyof Events>(event: E, ...args: Parameters<Events[E]>): void
  /** Number of listeners `event` currently has. */
  count(event: keyof Events): number
}

/**
 * Create an emitter. With `onListenerError`, exceptions thrown by listeners
 * are caught and passed to it (the remaining listeners still run); without
 * it they propagate to the caller of `emit`.
 */
export function createEmitter<
  Events extends { [E in keyof Events]: (...args: any[]) => void }
>(onListenerError?: (error: unknown, event: keyof Events) => void): Emitter<Events>
