#!lua
-- post.lua: append a client message to the simulation's stream, bounded in entries and bytes.
--
-- KEYS[1]  the stream           (PREFIX{msgs}),        entries with one field "m"
-- KEYS[2]  its bytes, a counter (PREFIX{msgs}:bytes),  the sum of the "m" values it holds
-- KEYS[3]  the reader's flag    (PREFIX{msgs}:reader), set with an expiry by world.messages()
-- ARGV[1]  the message
-- ARGV[2]  the most entries the stream keeps
-- ARGV[3]  the most bytes of messages it keeps
-- Returns  1 appended, 0 dropped (no simulation reads the stream now)
--
-- A message nobody reads is dropped, not kept: a reader starts from the
-- newest entry anyway. The oldest entries go first, so the stream never holds
-- more than ARGV[2] entries or ARGV[3] bytes of messages (one message may be
-- larger than the bound: it then stays alone). All keys share the hash tag {msgs}.
if redis.call('EXISTS', KEYS[3]) == 0 then
  return 0
end
local data = ARGV[1]
local most, budget = tonumber(ARGV[2]), tonumber(ARGV[3])
redis.call('XADD', KEYS[1], '*', 'm', data)
local total = redis.call('INCRBY', KEYS[2], #data)
local count = redis.call('XLEN', KEYS[1])
while count > 1 and (count > most or total > budget) do
  local first = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', 1)[1]
  redis.call('XDEL', KEYS[1], first[1])
  total = redis.call('DECRBY', KEYS[2], #first[2][2])
  count = count - 1
end
return 1
