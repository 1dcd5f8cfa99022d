// A typed React consumer: must compile under tsc --strict.
import React, { memo, useCallback } from "react"
import { Synk, type ViewOf } from "synk-client"
import { SynkProvider, useSubscription, useObjects, useObject, typedHooks } from "synk-client/react"
import type { SynkTypes } from "./fixture-types.js"

const hooks = typedHooks<SynkTypes>()
type AgentView = ViewOf<SynkTypes, "agent">
const isAgent = (v: ViewOf<SynkTypes>): v is AgentView => v.t === "agent"

const Row = memo(function Row({ view }: { view: AgentView }) {
  return <li>{view.state.name}: {view.state.x.toFixed(1)}</li>
})

function Agents({ sKey }: { sKey: string }) {
  useSubscription([sKey])
  const agents: readonly AgentView[] = hooks.useObjects(isAgent)
  const inKey = useObjects<SynkTypes>(sKey)
  const heavy = useObjects<SynkTypes>(useCallback((v: ViewOf<SynkTypes>) => v.t === "rock" && v.state.weight > 10, []))
  return <ul data-n={inKey.length + heavy.length}>{agents.map(a => <Row key={a.id} view={a} />)}</ul>
}

function One({ id }: { id: string }) {
  const view = useObject<SynkTypes>(id)
  if (!view) return null
  return <b>{view.t === "rock" ? view.state.tags.join(",") : view.state.y}</b>
}

const synk = new Synk<SynkTypes>("ws://127.0.0.1:8765/")
export const app = <SynkProvider synk={synk}><Agents sKey="world:0|0" /><One id="a" /></SynkProvider>
