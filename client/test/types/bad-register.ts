// Registers for "agent" a class that expects another state: tsc must reject it (TS2345).
import { Synk } from "synk-client"
import type { SynkTypes } from "./fixture-types.js"

const synk = new Synk<SynkTypes>("ws://127.0.0.1:8765/")
synk.objects.register("agent", class Agent {
  constructor(id: string, state: { x: string }) { console.log(id, state.x) }
})
