export { Synk, backoffDelay } from "./connection/index.js"
export type {
  SynkOptions,
  SynkUrl,
  SynkToken,
  FinalCloseCode,
  SynkEvents,
  SynkError,
  CloseInfo,
  CustomMessage,
  WebSocketLike,
  WebSocketClass
} from "./connection/index.js"
export { Mirror, isValidKey } from "./mirror/index.js"
export type {
  State,
  Untyped,
  TypeKey,
  ObjectOf,
  View,
  ViewOf,
  AddMessageOf,
  ModMessageOf,
  AddMessage,
  ModMessage,
  RemMessage,
  SnapMessage,
  UnsubscribeCause,
  ObjectMessage,
  PlainObject,
  SyncedClass,
  Synced,
  Entry,
  MirrorEvents,
  MirrorError,
  MirrorOptions
} from "./mirror/index.js"
export { createEmitter } from "./emitter/index.js"
export type { Emitter, Unsubscribe } from "./emitter/index.js"
export { objectsStore, objectStore, holdKeys } from "./store/index.js"
export type { Readable, StoreSource } from "./store/index.js"
