#!lua
-- claim.lua: claim an object id for a new incarnation.
--
-- KEYS[1]  the id's registry entry (PREFIX id:{ID})
-- ARGV[1]  the incarnation token
-- Returns  0 claimed (or already claimed by this token: retries are safe),
--          2 conflict (another incarnation holds the id)
local current = redis.call('GET', KEYS[1])
if not current then
  redis.call('SET', KEYS[1], ARGV[1])
  return 0
end
if current == ARGV[1] then
  return 0
end
return 2
