// A hand-written stand-in for what `synk types` generates (the shape is the
// contract): one interface per synced class, and the map of type keys.

export interface AgentState {
  x: number
  y: number
  name: string
}

export interface RockState {
  weight: number
  tags: string[]
  owner: string | null
}

export interface SynkTypes {
  "agent": AgentState
  "rock": RockState
}
