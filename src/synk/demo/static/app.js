// The demo page: draws the agents of the chunks in view, and keeps the
// subscription equal to the chunks in view as the map is dragged.
import { Synk } from "/synk-client/index.js"

const CHUNK = 16        // world units per chunk side (as in synk/demo)
const CHUNKS = 64       // chunks per map side
const SCALE = 3         // pixels per world unit

const canvas = document.getElementById("map")
const ctx = canvas.getContext("2d")
const $ = (id) => document.getElementById(id)

const url = new URL("/", location.href)
url.protocol = location.protocol === "https:" ? "wss:" : "ws:"
const synk = new Synk(url.href)
window.synk = synk

// The view: the world point at the canvas's top-left corner.
const view = { x: 400, y: 400 }
window.demoView = view

let messages = 0
let latencies = []
synk.objects.on("mod", (obj, msg) => {
  messages++
  if (msg.diff && typeof msg.diff.ts === "number") latencies.push(Date.now() - msg.diff.ts)
})
synk.objects.on("add", () => { messages++ })
synk.objects.on("rem", () => { messages++ })
synk.on("open", () => { $("status").textContent = "live" })
synk.on("close", () => { $("status").textContent = "reconnecting" })

function keysInView() {
  const w = canvas.width / SCALE, h = canvas.height / SCALE
  const x0 = Math.max(0, Math.floor(view.x / CHUNK)), y0 = Math.max(0, Math.floor(view.y / CHUNK))
  const x1 = Math.min(CHUNKS - 1, Math.floor((view.x + w) / CHUNK))
  const y1 = Math.min(CHUNKS - 1, Math.floor((view.y + h) / CHUNK))
  const keys = []
  for (let cx = x0; cx <= x1; cx++) for (let cy = y0; cy <= y1; cy++) keys.push(`chunk:${cx}|${cy}`)
  return keys
}

let subscribed = []
function follow() {
  subscribed = keysInView()
  synk.setSubscription(subscribed)
  window.demoKeys = subscribed
}

function resize() {
  canvas.width = window.innerWidth
  canvas.height = window.innerHeight
  follow()
}
window.addEventListener("resize", resize)
resize()

// Drag pans; a click that did not move spawns an agent there.
let drag = null
canvas.addEventListener("pointerdown", (e) => {
  drag = { x: e.clientX, y: e.clientY, vx: view.x, vy: view.y, moved: false }
  canvas.setPointerCapture(e.pointerId)
})
canvas.addEventListener("pointermove", (e) => {
  if (!drag) return
  const dx = e.clientX - drag.x, dy = e.clientY - drag.y
  if (Math.abs(dx) + Math.abs(dy) > 3) drag.moved = true
  if (!drag.moved) return
  canvas.classList.add("dragging")
  view.x = drag.vx - dx / SCALE
  view.y = drag.vy - dy / SCALE
  const keys = keysInView()
  if (keys.join() !== subscribed.join()) follow()
})
canvas.addEventListener("pointerup", (e) => {
  if (drag && !drag.moved) {
    synk.send("spawn", { x: view.x + e.clientX / SCALE, y: view.y + e.clientY / SCALE })
  }
  drag = null
  canvas.classList.remove("dragging")
})

function draw() {
  ctx.fillStyle = "#10131a"
  ctx.fillRect(0, 0, canvas.width, canvas.height)
  ctx.strokeStyle = "#1d2330"
  ctx.lineWidth = 1
  let count = 0
  for (const key of subscribed) {
    const [cx, cy] = key.slice(6).split("|").map(Number)
    ctx.strokeRect((cx * CHUNK - view.x) * SCALE + 0.5, (cy * CHUNK - view.y) * SCALE + 0.5, CHUNK * SCALE, CHUNK * SCALE)
    for (const obj of synk.objects.byKey(key)) {
      const s = obj.state
      count++
      ctx.fillStyle = s.hue === 0 ? "#ff5a5a" : `hsl(${s.hue} 70% 60%)`
      ctx.beginPath()
      ctx.arc((s.x - view.x) * SCALE, (s.y - view.y) * SCALE, s.hue === 0 ? 4 : 2.5, 0, Math.PI * 2)
      ctx.fill()
    }
  }
  $("objects").textContent = count
  requestAnimationFrame(draw)
}
requestAnimationFrame(draw)

setInterval(() => {
  $("keys").textContent = subscribed.length
  $("rate").textContent = messages
  messages = 0
  if (latencies.length) {
    latencies.sort((a, b) => a - b)
    $("latency").textContent = `${Math.round(latencies[latencies.length >> 1])} ms (p50)`
    latencies = []
  }
}, 1000)
