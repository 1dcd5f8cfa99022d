#!lua
-- apply.lua: guarded writes to the objects of one subscription key.
--
-- KEYS[1]  the key's objects hash (PREFIX{KEY}:o): object id -> "token:version\n" .. add message
-- KEYS[2]  the key's channel      (PREFIX{KEY}:c, sharded pub/sub)
-- ARGV[1]  the operations' codes, one letter each, in order:
--            u = update, t = take out (move away), d = delete, p = put (create or move in)
-- ARGV[2]  the operations' messages, in order, joined by "\n" (JSON never holds a raw newline)
-- ARGV     then three per operation:
--            id        the object id; each id at most once per call
--            expected  the stored value must start with this "token:version\n" (u, t, d)
--            value     the value to store (u, p; empty otherwise)
-- Returns  one code per operation, in order:
--            0 applied, 1 missing (no such object in this key), 2 conflict (another guard)
--
-- The messages of the operations that landed go out as one message on
-- KEYS[2], joined by "\n": a subscriber splits it. Both keys share the hash
-- tag {KEY}, so the script stays in one slot. The "#!lua" line (Redis 7
-- script flags, none given) makes Redis refuse the whole call while it is
-- out of memory, instead of failing halfway.
local objects, channel = KEYS[1], KEYS[2]
local codes, messages = ARGV[1], ARGV[2]
local n = #codes
local ids = {}
for j = 1, n do
  ids[j] = ARGV[j * 3]
end
local current = redis.call('HMGET', objects, unpack(ids))
local out, sets, dels = {}, {}, {}
local landed = 0
for j = 1, n do
  local op = string.byte(codes, j)
  local code = 0
  if op ~= 112 then -- not p
    local cur = current[j]
    if not cur then
      code = 1
    -- a plain find, not string.sub: no new string per operation; only a
    -- mismatch (a conflict, rare) scans past the guard
    elseif string.find(cur, ARGV[j * 3 + 1], 1, true) ~= 1 then
      code = 2
    end
  end
  if code == 0 then
    landed = landed + 1
    if op == 117 or op == 112 then -- u, p
      sets[#sets + 1] = ids[j]
      sets[#sets + 1] = ARGV[j * 3 + 2]
    else
      dels[#dels + 1] = ids[j]
    end
  end
  out[j] = code
end
if #sets > 0 then
  redis.call('HSET', objects, unpack(sets))
end
if #dels > 0 then
  redis.call('HDEL', objects, unpack(dels))
end
-- Published only once stored: a write Redis refuses (out of memory, say)
-- stops the script before any subscriber hears of it.
if landed == n then
  redis.call('SPUBLISH', channel, messages)
elseif landed > 0 then
  local kept, first = {}, 1
  for j = 1, n do
    local nl = string.find(messages, '\n', first, true) or #messages + 1
    if out[j] == 0 then
      kept[#kept + 1] = string.sub(messages, first, nl - 1)
    end
    first = nl + 1
  end
  redis.call('SPUBLISH', channel, table.concat(kept, '\n'))
end
return out
