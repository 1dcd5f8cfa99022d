// synk-client: mirror server-side synk objects in the browser.
// Plain ES modules with relative ".js" imports, so a gateway can serve this
// folder as static files (import { Synk } from "/synk-client/index.js").
export { Synk, backoffDelay } from "./connection/index.js"
export { Mirror, isValidKey } from "./mirror/index.js"
export { createEmitter } from "./emitter/index.js"
export { objectsStore, objectStore, holdKeys } from "./store/index.js"
