// Today's untyped usage (the README's), which must keep compiling.
import { Synk, Mirror, type PlainObject, type State } from "synk-client"

const synk = new Synk("ws://127.0.0.1:8765/", { gapTimeout: 500, backoff: { min: 100, max: 5000 } })
synk.objects.register("agent", class Agent {
  constructor(id: string, state: State, t: string) { console.log(id, state, t) }
  update(diff: State) { console.log(diff) }
  teardown() {}
})
synk.setSubscription(["world:0|0", "world:0|1"])
const off = synk.objects.on("mod", (obj, msg) => {
  const x: unknown = obj.state.x // state is Record<string, unknown>
  console.log(x, obj.t.length, msg.v)
})
synk.objects.on("add", (obj: PlainObject) => console.log(obj.state))
synk.on("message", msg => { if (msg.method === "chat") console.log(msg.text) })
synk.on("error", ({ code, reason }) => console.warn(code, reason))
synk.send("chat", { text: "hi" })
const keys: string[] = synk.objects.keys()
const o = synk.objects.get<{ sprite: string }>("a")
console.log(o?.sprite, keys, synk.objects.byKey("world:0|0").length)
off()
synk.close()
const mirror = new Mirror({ onResync: key => console.log(key) })
mirror.handle({ method: "snap", sKey: "k", ids: [] })
