// Reads a field AgentState does not have, through a typed hook: tsc must reject it (TS2339).
import React from "react"
import { typedHooks } from "synk-client/react"
import type { SynkTypes } from "./fixture-types.js"

const { useObject } = typedHooks<SynkTypes>()
export function One({ id }: { id: string }) {
  const view = useObject(id)
  return <b>{view?.t === "agent" ? view.state.z : null}</b>
}
