// Reads a field AgentState does not have: tsc must reject it (TS2339).
import { Synk } from "synk-client"
import type { SynkTypes } from "./fixture-types.js"

const synk = new Synk<SynkTypes>("ws://127.0.0.1:8765/")
synk.objects.on("add", obj => {
  if (obj.t === "agent") console.log(obj.state.z)
})
