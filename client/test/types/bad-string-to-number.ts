// Puts a string into a number field: tsc must reject it (TS2322).
import { Synk } from "synk-client"
import type { SynkTypes } from "./fixture-types.js"

const synk = new Synk<SynkTypes>("ws://127.0.0.1:8765/")
synk.objects.on("mod", obj => {
  if (obj.t === "agent") obj.state.x = obj.state.name
})
