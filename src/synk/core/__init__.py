"""The pure core of synk: object model, diffs, identities and message encoding.

Nothing under ``synk.core`` does I/O: it imports no asyncio, redis or
websockets, so every rule here is tested by feeding values in and comparing
what comes out. The store backends, the world and the gateway are thin
layers around it.
"""
