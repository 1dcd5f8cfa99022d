// The synk inspector page: polls the gateway's state (/inspect/state) about
// once a second, and shows the objects of the key clicked live, through
// synk's own client over an ordinary connection to the gateway.
// Plain ES module, no framework; every URL is relative to where the page is
// served (/inspect, or /sync/inspect under a mount point).
import { Synk } from "../synk-client/index.js"

const POLL_MS = 1000
/** Points kept per sparkline: a minute at one poll a second. */
const HISTORY = 60
/** Objects shown at most for one key: a key of 100,000 objects would freeze the page. */
const MAX_OBJECTS = 500

const base = location.pathname.replace(/\/inspect\/?$/, "")
const token = new URLSearchParams(location.search).get("token")
const withToken = (url) => (token ? `${url}?token=${encodeURIComponent(token)}` : url)
const stateUrl = withToken(`${base}/inspect/state`)
const wsUrl = `${location.protocol === "https:" ? "wss:" : "ws:"}//${location.host}${base}/`

const $ = (sel) => document.querySelector(sel)
const history = {}
let previous = null
let latest = null
let selected = null
let synk = null
let offMirror = []
const changed = new Set()
let drawQueued = false
let polls = 0

// -- formatting ---------------------------------------------------------------------

const escapeHtml = (s) =>
  String(s).replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c])

const integer = new Intl.NumberFormat("en-US", { maximumFractionDigits: 0 })
const decimal = new Intl.NumberFormat("en-US", { maximumFractionDigits: 1 })

function rate(n) {
  if (n >= 1e6) return `${decimal.format(n / 1e6)}M`
  if (n >= 1e4) return `${decimal.format(n / 1e3)}k`
  return n >= 100 ? integer.format(n) : decimal.format(n)
}

function bytes(n) {
  if (n < 1024) return `${n} B`
  if (n < 1024 * 1024) return `${decimal.format(n / 1024)} KiB`
  return `${decimal.format(n / 1024 / 1024)} MiB`
}

function seconds(s) {
  if (s <= 0) return "–"
  if (s < 1) return `${integer.format(s * 1000)} ms`
  return `${decimal.format(s)} s`
}

function compact(value, max = 160) {
  const text = JSON.stringify(value)
  return text.length > max ? `${text.slice(0, max - 1)}…` : text
}

// -- the counters ---------------------------------------------------------------------

function spark(name, value) {
  const points = (history[name] ||= [])
  points.push(value)
  if (points.length > HISTORY) points.shift()
  const top = Math.max(1, ...points)
  const step = 100 / (HISTORY - 1)
  const offset = (HISTORY - points.length) * step
  const line = points.map((v, i) => `${(offset + i * step).toFixed(1)},${(22 - (v / top) * 20).toFixed(1)}`).join(" ")
  document.querySelector(`[data-stat="${name}"] polyline`).setAttribute("points", line)
}

function stat(name, value, text) {
  document.querySelector(`[data-stat="${name}"] .value`).textContent = text ?? integer.format(value)
  spark(name, value)
}

function counters(s) {
  stat("clients", s.counts.clients)
  stat("keys", s.counts.keys)
  stat("subscriptions", s.counts.subscriptions)
  // Rates from the difference of two reads, over the gateway's own clock.
  const dt = previous ? s.time - previous.time : 0
  const per = (name) => (dt > 0 ? Math.max(0, s.totals[name] - previous.totals[name]) / dt : 0)
  for (const [card, total] of [["out_rate", "messages_out"], ["in_rate", "messages_in"], ["store_rate", "store_messages"]]) {
    const value = per(total)
    stat(card, value, previous ? rate(value) : "–")
  }
  const t = s.totals
  $("#totals").textContent =
    `${integer.format(t.messages_out)} messages out (${bytes(t.bytes_out)}) · ${integer.format(t.messages_in)} in · ` +
    `${integer.format(t.slow_resyncs)} slow resyncs · ${integer.format(t.errors)} errors`
}

// -- keys and clients ----------------------------------------------------------------------

function drawKeys(s) {
  const filter = $("#key-filter").value.trim().toLowerCase()
  const rows = s.keys.filter((k) => !filter || k.key.toLowerCase().includes(filter))
  const top = Math.max(1, ...s.keys.map((k) => k.subscribers))
  $("#keys tbody").innerHTML = rows
    .map(
      (k) =>
        `<tr data-key="${escapeHtml(k.key)}"${k.key === selected ? ' class="selected"' : ""}>` +
        `<td class="mono">${escapeHtml(k.key)}</td>` +
        `<td class="num"><span class="bar" style="width:${Math.round((k.subscribers / top) * 60)}px"></span>${integer.format(k.subscribers)}</td></tr>`
    )
    .join("")
  const more = s.counts.keys > s.keys.length ? ` (first ${s.keys.length})` : ""
  $("#keys-count").textContent = `${integer.format(s.counts.keys)}${more}`
  $("#keys-empty").hidden = s.counts.keys > 0
}

function clientState(c) {
  if (c.lagging) return '<span class="pill bad">resyncing</span>'
  if (c.lag >= 1) return '<span class="pill warn">slow</span>'
  return '<span class="pill ok">live</span>'
}

function drawClients(s) {
  const me = synk?.clientId
  $("#clients tbody").innerHTML = s.clients
    .map((c) => {
      const keys = c.keys.map((k) => `<span class="keytag" data-key="${escapeHtml(k)}">${escapeHtml(k)}</span>`).join("")
      const more = c.key_count > c.keys.length ? `<span class="muted">+${c.key_count - c.keys.length} more</span>` : ""
      const identity = c.identity === null ? '<span class="muted">–</span>' : escapeHtml(compact(c.identity, 60))
      const self = c.id === me ? ' <span class="pill self">this page</span>' : ""
      return (
        `<tr data-client="${escapeHtml(c.id)}">` +
        `<td class="mono">${escapeHtml(c.id)}</td>` +
        `<td class="mono" title="${escapeHtml(JSON.stringify(c.identity))}">${identity}</td>` +
        `<td>${keys || '<span class="muted">none</span>'}${more}</td>` +
        `<td class="num">${integer.format(c.backlog_messages)}</td>` +
        `<td class="num">${bytes(c.backlog_bytes)}</td>` +
        `<td class="num">${seconds(c.lag)}</td>` +
        `<td>${clientState(c)}${self}</td></tr>`
      )
    })
    .join("")
  const more = s.counts.clients > s.clients.length ? ` (first ${s.clients.length})` : ""
  $("#clients-count").textContent = `${integer.format(s.counts.clients)}${more}`
  $("#clients-empty").hidden = s.counts.clients > 0
}

function status(state, text) {
  $("#status").dataset.state = state
  $("#status-text").textContent = text
}

async function poll() {
  try {
    const response = await fetch(stateUrl, { cache: "no-store" })
    if (response.status === 401) {
      status("down", token ? "the token was refused (401)" : "unauthorized (401): open this page with ?token=…")
    } else if (!response.ok) {
      status("down", `the gateway answered ${response.status}`)
    } else {
      const s = await response.json()
      counters(s)
      drawKeys(s)
      drawClients(s)
      previous = latest = s
      polls++
      status("live", `live · ${new Date().toLocaleTimeString()}`)
    }
  } catch (error) {
    status("down", `gateway unreachable (${error.message})`)
  }
  setTimeout(poll, POLL_MS)
}

// -- a key's objects, live ----------------------------------------------------------------------

function connect() {
  if (synk) return synk
  synk = new Synk(wsUrl, { token: token ?? undefined })
  synk.on("error", ({ code, reason }) => {
    $("#objects-key").textContent = `${selected ?? ""} — error ${code}${reason ? `: ${reason}` : ""}`
  })
  const touched = (obj) => {
    if (obj?.id !== undefined) changed.add(obj.id) // flashed if it is in the key shown
    queueDraw()
  }
  offMirror = ["add", "mod", "rem"].map((event) => synk.objects.on(event, touched))
  return synk
}

function queueDraw() {
  if (drawQueued) return
  drawQueued = true
  requestAnimationFrame(() => {
    drawQueued = false
    drawObjects()
  })
}

function drawObjects() {
  if (!selected || !synk) return
  const entries = synk.objects
    .byKey(selected)
    .map((obj) => synk.objects.entry(obj.id))
    .filter(Boolean)
    .sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0))
  const shown = entries.slice(0, MAX_OBJECTS)
  $("#objects tbody").innerHTML = shown
    .map((e) => {
      const state = e.obj.state ?? e.obj
      return (
        `<tr data-id="${escapeHtml(e.id)}"${changed.has(e.id) ? ' class="flash"' : ""}>` +
        `<td class="mono">${escapeHtml(e.id)}</td>` +
        `<td>${escapeHtml(e.t)}</td>` +
        `<td class="num v">${integer.format(e.v)}</td>` +
        `<td class="state">${escapeHtml(compact(state))}</td></tr>`
      )
    })
    .join("")
  changed.clear()
  const more = entries.length > shown.length ? ` (first ${shown.length})` : ""
  $("#objects-count").textContent = `${integer.format(entries.length)}${more}`
  $("#objects-key").textContent = synk.objects.isSubscribed(selected) ? selected : `${selected} — loading…`
}

function select(key) {
  selected = key
  connect().setSubscription([key])
  $("#objects-key").textContent = `${key} — loading…`
  $("#objects tbody").innerHTML = ""
  $("#objects-count").textContent = ""
  if (latest) drawKeys(latest)
  queueDraw()
}

function onKeyClick(event) {
  const row = event.target.closest("[data-key]")
  if (row) select(row.dataset.key)
}

$("#keys tbody").addEventListener("click", onKeyClick)
$("#clients tbody").addEventListener("click", onKeyClick)
$("#key-filter").addEventListener("input", () => latest && drawKeys(latest))
// A snapshot arrives as adds: redraw once it is complete too.
setInterval(() => selected && synk && queueDraw(), POLL_MS)

// For tests and the console.
window.synkInspector = {
  get synk() {
    return synk
  },
  get selected() {
    return selected
  },
  get state() {
    return latest
  },
  /** states read so far */
  get polls() {
    return polls
  },
  select,
  stop() {
    offMirror.forEach((off) => off())
    synk?.close()
  }
}

poll()
