#!lua
-- apply.lua: guarded writes to the objects of one subscription key.
--
-- KEYS[1]  the key's objects hash (PREFIX{KEY}:o): object id -> "token:version\n" then
--          the record ("{...}", the add message) or a mark (">KEY\n{...}" moved out,
--          "?{...}" create pending, "!" deleted); see synk/core/batch.py
-- ARGV[1]  the operations' codes, one letter each, in order:
--            u update, t take out (move away: leaves a mark), d delete (leaves a mark),
--            c create pending (hidden), a activate a pending create,
--            p put (move in, or a repair), x sweep a mark
-- ARGV[2]  the operations' messages, in order, joined by "\n" (JSON never holds a
--          raw newline); empty for c, a and x ("a" publishes its stored record)
-- ARGV     then three per operation:
--            id        the object id; each id at most once per call
--            expected  the stored value must start with this (u t d a x; for c:
--                      absent, or starts with it; for p: absent or not live)
--            value     the value to store (u t d c p; empty otherwise)
-- ARGV     last: the key's channel (PREFIX{KEY}:c, sharded pub/sub). Not a KEYS entry:
--          no key of that name ever exists, and a slot being migrated answers
--          TRYAGAIN to a call naming a key it holds and one it does not, for as
--          long as the migration lasts.
-- Returns  one code per operation, in order (synk/store/base.py, OK MISSING CONFLICT):
--            0 applied, 1 missing (no such object in this key), 2 conflict (another guard)
--
-- The messages of the operations that landed go out as one message on
-- the channel, joined by "\n": a subscriber splits it. The hash and the channel
-- share the hash tag {KEY}, so the script stays in one slot. The "#!lua" line (Redis 7
-- script flags, none given) makes Redis refuse the whole call while it is
-- out of memory, instead of failing halfway. The same rule, in Python for
-- the embedded store, is synk.core.batch.apply_op.
local objects, channel = KEYS[1], ARGV[#ARGV]
local codes, messages = ARGV[1], ARGV[2]
local n = #codes
local ids = {}
for j = 1, n do
  ids[j] = ARGV[j * 3]
end
local current = redis.call('HMGET', objects, unpack(ids))
local out, sets, dels, derived = {}, {}, {}, {}
local landed = 0
for j = 1, n do
  local op = string.byte(codes, j)
  local cur = current[j]
  local code = 0
  if op == 112 then -- p: absent, or a mark (not live here)
    if cur then
      local nl = string.find(cur, '\n', 1, true)
      if nl and string.byte(cur, nl + 1) == 123 then
        code = 2
      end
    end
  elseif op == 99 then -- c: absent, or this same pending create sent again
    if cur and string.find(cur, ARGV[j * 3 + 1], 1, true) ~= 1 then
      code = 2
    end
  elseif not cur then
    code = 1
  -- a plain find, not string.sub: no new string per operation; only a
  -- mismatch (a conflict, rare) scans past the guard
  elseif string.find(cur, ARGV[j * 3 + 1], 1, true) ~= 1 then
    -- a mark is not the object: missing here, not a conflict
    local nl = string.find(cur, '\n', 1, true)
    if nl and string.byte(cur, nl + 1) == 123 then
      code = 2
    else
      code = 1
    end
  end
  if code == 0 then
    landed = landed + 1
    if op == 120 then -- x
      dels[#dels + 1] = ids[j]
    elseif op == 97 then -- a: the pending record becomes live, and is published
      local exp = ARGV[j * 3 + 1]
      local rec = string.sub(cur, #exp + 1)
      sets[#sets + 1] = ids[j]
      sets[#sets + 1] = string.sub(exp, 1, #exp - 1) .. rec
      derived[j] = rec
    else
      sets[#sets + 1] = ids[j]
      sets[#sets + 1] = ARGV[j * 3 + 2]
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
if landed == n and not string.find(codes, '[cax]') then
  redis.call('SPUBLISH', channel, messages)
elseif landed > 0 then
  local kept, first = {}, 1
  for j = 1, n do
    local nl = string.find(messages, '\n', first, true) or #messages + 1
    if out[j] == 0 then
      local m = derived[j] or string.sub(messages, first, nl - 1)
      if #m > 0 then
        kept[#kept + 1] = m
      end
    end
    first = nl + 1
  end
  if #kept > 0 then
    redis.call('SPUBLISH', channel, table.concat(kept, '\n'))
  end
end
return out
