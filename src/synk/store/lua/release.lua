#!lua
-- release.lua: free the id of a deleted object.
--
-- KEYS[1]  the id's registry entry (PREFIX id:{ID})
-- ARGV[1]  the incarnation token that was deleted
-- Returns  0 released, 1 not held by this token (left alone)
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  return 0
end
return 1
