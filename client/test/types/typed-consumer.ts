// A consumer of the typed client: must compile under tsc --strict.
import { Synk, type ObjectOf, type ViewOf } from "synk-client"
import type { AgentState, SynkTypes } from "./fixture-types.js"

const synk = new Synk<SynkTypes>("ws://127.0.0.1:8765/")
synk.setSubscription(["world:0|0"])

synk.objects.on("add", obj => {
  if (obj.t === "agent") {
    const x: number = obj.state.x // narrowed on t
    const name: string = obj.state.name
    console.log(x + 1, name.toUpperCase())
  } else {
    const weight: number = obj.state.weight // the only other type: a rock
    const owner: string | null = obj.state.owner
    console.log(weight, owner)
  }
})

synk.objects.on("mod", (obj, msg) => {
  if (msg.method === "mod" && msg.t === "agent") {
    const x: number | undefined = msg.diff.x // diffs are Partial<State>
    console.log(x, obj.id)
  }
})

synk.objects.on("rem", (obj, cause) => console.log(obj.t, cause.method))

class Agent {
  id: string
  x: number
  constructor(id: string, state: AgentState) {
    this.id = id
    this.x = state.x
  }
  update(diff: Partial<AgentState>) {
    if (diff.x !== undefined) this.x = diff.x
  }
  teardown() {}
}
synk.objects.register("agent", Agent)

// Reading.
const all: ObjectOf<SynkTypes>[] = synk.objects.all()
for (const obj of synk.objects) if (obj.t === "rock") console.log(obj.state.tags.join(","))
const rocks: ObjectOf<SynkTypes, "rock">[] = synk.objects.all().filter((o): o is ObjectOf<SynkTypes, "rock"> => o.t === "rock")
const agent: Agent | undefined = synk.objects.byId<Agent>("a")
const inKey = synk.objects.byKey("world:0|0")
const keys: string[] = synk.objects.subscribedKeys()
const ids: string[] = synk.objects.ids()
const view: ViewOf<SynkTypes> | undefined = synk.objects.view("a")
if (view && view.t === "agent") console.log(view.state.x.toFixed(1))
console.log(all, rocks, agent, inKey, keys, ids)

// Stores.
import { objectsStore, objectStore, holdKeys, type Readable } from "synk-client"
const inKeyStore: Readable<readonly ViewOf<SynkTypes>[]> = objectsStore(synk, "world:0|0")
const agentsStore = objectsStore(synk, (v): v is ViewOf<SynkTypes, "agent"> => v.t === "agent")
const offStore = agentsStore.subscribe(agents => agents.forEach(a => console.log(a.state.x.toFixed(0))))
const one = objectStore(synk, "a").get()
if (one?.t === "rock") console.log(one.state.weight + 1)
const release: () => void = holdKeys(synk, ["world:0|0"])
offStore()
release()
console.log(inKeyStore)
