-- apply.lua: guarded writes to the objects of one subscription key.
--
-- KEYS[1]  records hash of the key   (PREFIX{KEY}:r, object id -> add message)
-- KEYS[2]  guards hash of the key    (PREFIX{KEY}:m, object id -> "token:version")
-- KEYS[3]  the key's channel         (PREFIX{KEY}:c, sharded pub/sub)
-- ARGV     groups of six, one per operation:
--            op        u = update, t = take out (move away), d = delete, p = put (create or move in)
--            id        the object id
--            expected  the guard the object must have (u, t, d)
--            guard     the guard to store (u, p)
--            record    the record to store (u, p)
--            message   published on KEYS[3] when the operation lands
-- Returns  one code per operation, in order:
--            0 applied, 1 missing (no such object in this key), 2 conflict (other guard)
--
-- All keys share the hash tag {KEY}, so the script stays in one slot.
local records, guards, channel = KEYS[1], KEYS[2], KEYS[3]
local out = {}
for i = 1, #ARGV, 6 do
  local op, id = ARGV[i], ARGV[i + 1]
  local code = 0
  if op ~= 'p' then
    local current = redis.call('HGET', guards, id)
    if not current then
      code = 1
    elseif current ~= ARGV[i + 2] then
      code = 2
    end
  end
  if code == 0 then
    if op == 'u' or op == 'p' then
      redis.call('HSET', guards, id, ARGV[i + 3])
      redis.call('HSET', records, id, ARGV[i + 4])
    else
      redis.call('HDEL', guards, id)
      redis.call('HDEL', records, id)
    end
    redis.call('SPUBLISH', channel, ARGV[i + 5])
  end
  out[#out + 1] = code
end
return out
