#!lua
-- apply.lua: guarded writes to the objects of one subscription key.
--
-- KEYS[1]  the key's objects hash (PREFIX{KEY}:o): object id -> "token:version\n" .. add message
-- KEYS[2]  the key's channel      (PREFIX{KEY}:c, sharded pub/sub)
-- ARGV     groups of five, one per operation:
--            op        u = update, t = take out (move away), d = delete, p = put (create or move in)
--            id        the object id; each id at most once per call
--            expected  the stored value must start with this "token:version\n" (u, t, d)
--            value     the value to store (u, p)
--            message   published on KEYS[2] when the operation lands
-- Returns  one code per operation, in order:
--            0 applied, 1 missing (no such object in this key), 2 conflict (another guard)
--
-- Both keys share the hash tag {KEY}, so the script stays in one slot. The
-- "#!lua" line (Redis 7 script flags, none given) makes Redis refuse the
-- whole call while it is out of memory, instead of failing halfway.
local objects, channel = KEYS[1], KEYS[2]
local n = #ARGV / 5
local ids = {}
for j = 1, n do
  ids[j] = ARGV[(j - 1) * 5 + 2]
end
local current = redis.call('HMGET', objects, unpack(ids))
local out, sets, dels, messages = {}, {}, {}, {}
for j = 1, n do
  local i = (j - 1) * 5
  local op = ARGV[i + 1]
  local code = 0
  if op ~= 'p' then
    local cur = current[j]
    if not cur then
      code = 1
    else
      local expected = ARGV[i + 3]
      if string.sub(cur, 1, #expected) ~= expected then
        code = 2
      end
    end
  end
  if code == 0 then
    if op == 'u' or op == 'p' then
      sets[#sets + 1] = ids[j]
      sets[#sets + 1] = ARGV[i + 4]
    else
      dels[#dels + 1] = ids[j]
    end
    messages[#messages + 1] = ARGV[i + 5]
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
for k = 1, #messages do
  redis.call('SPUBLISH', channel, messages[k])
end
return out
