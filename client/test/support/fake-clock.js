// A clock for tests: timers fire only when the test advances time.

/** Timers that only move when the test says so. */
export function fakeClock() {
  let now = 0
  let seq = 0
  const timers = new Map()
  return {
    setTimeout(fn, ms) {
      timers.set(++seq, { at: now + ms, fn })
      return seq
    },
    clearTimeout(id) {
      timers.delete(id)
    },
    get pending() {
      return timers.size
    },
    advance(ms) {
      const until = now + ms
      for (;;) {
        let next
        for (const [id, t] of timers) {
          if (t.at <= until && (!next || t.at < next[1].at)) next = [id, t]
        }
        if (!next) break
        timers.delete(next[0])
        now = next[1].at
        next[1].fn()
      }
      now = until
    }
  }
}
