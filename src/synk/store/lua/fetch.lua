-- fetch.lua: some objects of one subscription key, read atomically.
--
-- KEYS[1]  records hash of the key (PREFIX{KEY}:r)
-- KEYS[2]  guards hash of the key  (PREFIX{KEY}:m)
-- ARGV     object ids
-- Returns  {records in ARGV order, guards in ARGV order}; false where absent
return {redis.call('HMGET', KEYS[1], unpack(ARGV)), redis.call('HMGET', KEYS[2], unpack(ARGV))}
