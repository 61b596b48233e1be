"""The Redis scripts: one Lua script per round trip, timed by the server's ``TIME``.

Keys, with ``P`` = ``<prefix>:v1``::

    P:k:<key>    hash   fence (never deleted: the fencing counter), holder, node, exp, stop
    P:q:<key>    zset   the key's tickets, score = rank (from P:seq)
    P:t:<id>     hash   a ticket: key, inst, exp, sup (superseded)
    P:seq        int    the sequence for ticket ids and ranks
    P:held       set    keys that have a holder (for holders())
    P:ih:<inst>  set    keys an instance holds;  P:it:<inst>  set  its tickets
    P:beats      hash   instance -> "<seen µs>|<node>" (the heartbeat)
    P:hint       channel: a key's name is published when something changed for it

Times are integer microseconds of the server's clock. Scripts touch keys they compute, so
they need a single Redis (or a Sentinel-managed primary), not Redis Cluster. Status codes
as in PostgreSQL: 0 granted, 1 queued / waiting, 2 busy, 3 full, 4 gone, 5 superseded.
"""

from __future__ import annotations

PRELUDE = r"""
local P = ARGV[1]
local function now_us()
    local t = redis.call('TIME')
    return tonumber(t[1]) * 1000000 + tonumber(t[2])
end
local function kk(key) return P .. ':k:' .. key end
local function qk(key) return P .. ':q:' .. key end
local function tk(id) return P .. ':t:' .. id end
local function us(x) return string.format('%d', x) end

local function drop_ticket(id, key, inst)
    redis.call('ZREM', qk(key), id)
    redis.call('DEL', tk(id))
    if inst then redis.call('SREM', P .. ':it:' .. inst, id) end
end

local function clear_holder(key, holder)
    redis.call('HDEL', kk(key), 'holder', 'node', 'exp', 'stop')
    redis.call('SREM', P .. ':held', key)
    if holder then redis.call('SREM', P .. ':ih:' .. holder, key) end
end

-- Forget an expired holder and expired tickets; return the live holder (or false), stop.
local function prune(key, now)
    local h = redis.call('HMGET', kk(key), 'holder', 'exp', 'stop')
    local holder = h[1]
    if holder and tonumber(h[2]) <= now then
        clear_holder(key, holder)
        holder = false
    end
    for _, id in ipairs(redis.call('ZRANGE', qk(key), 0, -1)) do
        local t = redis.call('HMGET', tk(id), 'exp', 'inst')
        if not t[1] or tonumber(t[1]) <= now then drop_ticket(id, key, t[2]) end
    end
    return holder, (holder and h[3] == '1')
end

local function head(key)
    for _, id in ipairs(redis.call('ZRANGE', qk(key), 0, -1)) do
        if redis.call('HGET', tk(id), 'sup') ~= '1' then return id end
    end
    return false
end

local function grant(key, inst, node, lease, now)
    local f = redis.call('HINCRBY', kk(key), 'fence', 1)
    local exp = now + lease
    redis.call('HSET', kk(key), 'holder', inst, 'node', node, 'exp', us(exp), 'stop', '0')
    redis.call('SADD', P .. ':held', key)
    redis.call('SADD', P .. ':ih:' .. inst, key)
    return {0, f, exp}
end

local function take(id, inst, node, lease, now)
    local t = redis.call('HMGET', tk(id), 'key', 'inst', 'sup')
    if not t[1] or t[2] ~= inst then return {4} end
    local key = t[1]
    local holder = prune(key, now)
    if redis.call('EXISTS', tk(id)) == 0 then return {4} end
    if t[3] == '1' then
        drop_ticket(id, key, inst)
        return {5}
    end
    if not holder and head(key) == id then
        drop_ticket(id, key, inst)
        return grant(key, inst, node, lease, now)
    end
    return {1}
end
"""

ACQUIRE = (
    PRELUDE
    + r"""
local key, inst, node = ARGV[2], ARGV[3], ARGV[4]
local lease, mode, maxq = tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])
local now = now_us()
local holder, stop = prune(key, now)
local h = head(key)
if not holder and not h then return grant(key, inst, node, lease, now) end
if mode == 2 then return {2} end
local rank
if mode == 1 then
    if holder and not stop then redis.call('HSET', kk(key), 'stop', '1') end
    redis.call('PUBLISH', P .. ':hint', key)
    if h then
        redis.call('HSET', tk(h), 'sup', '1')
        if not holder then return grant(key, inst, node, lease, now) end
        rank = tonumber(redis.call('ZSCORE', qk(key), h))
    else
        rank = redis.call('INCR', P .. ':seq')
    end
else
    if maxq >= 0 then
        local n = 0
        for _, id in ipairs(redis.call('ZRANGE', qk(key), 0, -1)) do
            if redis.call('HGET', tk(id), 'sup') ~= '1' then n = n + 1 end
        end
        if n >= maxq then return {3} end
    end
    rank = redis.call('INCR', P .. ':seq')
end
local id = redis.call('INCR', P .. ':seq')
redis.call('HSET', tk(id), 'key', key, 'inst', inst, 'exp', us(now + lease), 'sup', '0')
redis.call('ZADD', qk(key), rank, id)
redis.call('SADD', P .. ':it:' .. inst, id)
return {1, 0, 0, id}
"""
)

TAKE = (
    PRELUDE
    + r"""
return take(ARGV[2], ARGV[3], ARGV[4], tonumber(ARGV[5]), now_us())
"""
)

ROUND = (
    PRELUDE
    + r"""
local inst, node, lease, nkeys = ARGV[2], ARGV[3], tonumber(ARGV[4]), tonumber(ARGV[5])
local now = now_us()
redis.call('HSET', P .. ':beats', inst, us(now) .. '|' .. node)
local renewed, tickets = {}, {}
for i = 6, 5 + nkeys do
    local key = ARGV[i]
    local h = redis.call('HMGET', kk(key), 'holder', 'exp', 'fence', 'stop')
    if h[1] == inst and tonumber(h[2]) > now then
        redis.call('HSET', kk(key), 'exp', us(now + lease))
        renewed[#renewed + 1] = {key, tonumber(h[3]), now + lease, h[4] == '1' and 1 or 0}
    end
end
for i = 6 + nkeys, #ARGV do
    local id = ARGV[i]
    local t = redis.call('HMGET', tk(id), 'inst', 'exp', 'sup')
    if t[1] == inst and tonumber(t[2]) > now and t[3] ~= '1' then
        redis.call('HSET', tk(id), 'exp', us(now + lease))
    end
    local r = take(id, inst, node, lease, now)
    tickets[#tickets + 1] = {tonumber(id), r[1], r[2] or 0, r[3] or 0}
end
local beats = redis.call('HGETALL', P .. ':beats')
for i = 1, #beats, 2 do
    local seen = tonumber(string.match(beats[i + 1], '^(%d+)|'))
    if seen < now - 10 * lease then redis.call('HDEL', P .. ':beats', beats[i]) end
end
return {renewed, tickets}
"""
)

RELEASE = (
    PRELUDE
    + r"""
local key, inst, fence = ARGV[2], ARGV[3], tonumber(ARGV[4])
local h = redis.call('HMGET', kk(key), 'holder', 'fence', 'exp')
if h[1] ~= inst or tonumber(h[2]) ~= fence then return 0 end
clear_holder(key, inst)
if redis.call('ZCARD', qk(key)) > 0 then redis.call('PUBLISH', P .. ':hint', key) end
if tonumber(h[3]) > now_us() then return 1 end
return 0
"""
)

CANCEL = (
    PRELUDE
    + r"""
local id, inst = ARGV[2], ARGV[3]
local t = redis.call('HMGET', tk(id), 'key', 'inst')
if t[1] and t[2] == inst then
    drop_ticket(id, t[1], inst)
    if redis.call('ZCARD', qk(t[1])) > 0 then redis.call('PUBLISH', P .. ':hint', t[1]) end
end
return 0
"""
)

CLOSE = (
    PRELUDE
    + r"""
local inst = ARGV[2]
for _, key in ipairs(redis.call('SMEMBERS', P .. ':ih:' .. inst)) do
    if redis.call('HGET', kk(key), 'holder') == inst then
        clear_holder(key, inst)
        redis.call('PUBLISH', P .. ':hint', key)
    end
end
redis.call('DEL', P .. ':ih:' .. inst)
for _, id in ipairs(redis.call('SMEMBERS', P .. ':it:' .. inst)) do
    local key = redis.call('HGET', tk(id), 'key')
    if key then
        drop_ticket(id, key, inst)
        redis.call('PUBLISH', P .. ':hint', key)
    end
end
redis.call('DEL', P .. ':it:' .. inst)
redis.call('HDEL', P .. ':beats', inst)
return 0
"""
)

HOLDERS = (
    PRELUDE
    + r"""
local now = now_us()
local out = {}
for _, key in ipairs(redis.call('SMEMBERS', P .. ':held')) do
    local h = redis.call('HMGET', kk(key), 'holder', 'node', 'fence', 'exp')
    if h[1] and tonumber(h[4]) > now then
        out[#out + 1] = {key, h[2], tonumber(h[3]), tonumber(h[4])}
    else
        prune(key, now)
        if not h[1] then redis.call('SREM', P .. ':held', key) end
    end
end
return out
"""
)

NODES = (
    PRELUDE
    + r"""
local now, within = now_us(), tonumber(ARGV[2])
local out = {}
local beats = redis.call('HGETALL', P .. ':beats')
for i = 1, #beats, 2 do
    local seen, node = string.match(beats[i + 1], '^(%d+)|(.*)$')
    if tonumber(seen) > now - within then out[#out + 1] = node end
end
return out
"""
)

WAITING = (
    PRELUDE
    + r"""
local now, n = now_us(), 0
for _, id in ipairs(redis.call('ZRANGE', qk(ARGV[2]), 0, -1)) do
    local t = redis.call('HMGET', tk(id), 'exp', 'sup')
    if t[1] and tonumber(t[1]) > now and t[2] ~= '1' then n = n + 1 end
end
return n
"""
)
