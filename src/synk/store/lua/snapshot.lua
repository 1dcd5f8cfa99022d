-- snapshot.lua: every object of one subscription key, read atomically.
--
-- KEYS[1]  records hash of the key (PREFIX{KEY}:r)
-- KEYS[2]  guards hash of the key  (PREFIX{KEY}:m)
-- ARGV     none
-- Returns  {records as HGETALL gives them, guards as HGETALL gives them}
return {redis.call('HGETALL', KEYS[1]), redis.call('HGETALL', KEYS[2])}
