"""The channel layer: channels-redis', plus asking which of many groups anyone listens to in one round trip.

Most groups the server tells about are empty: a build's viewers are few and
come and go, yet every claim, state change and log append of every build is
announced to its group. channels-redis' `group_send` costs two Redis round
trips even for an empty group (expire old members, list the rest), which on
a busy server was the largest single cost of a build claim.
`groups_with_members()` expires old members and counts the rest for a whole
batch of groups in one Lua call per Redis shard and GROUPS_PER_CALL groups;
swarm.core.group_notices then sends only to the groups that have someone in
them. The health check's pings use it too: drones without an agent connected
get no send.
"""
from __future__ import annotations

import hashlib
import time
from collections import defaultdict

from channels_redis.core import RedisChannelLayer as ChannelsRedisLayer
from redis.exceptions import NoScriptError

# KEYS: the groups' sorted sets; ARGV[1]: members added before this time have expired.
EXPIRE_AND_COUNT = """
local counts = {}
for i = 1, #KEYS do
    redis.call('ZREMRANGEBYSCORE', KEYS[i], 0, ARGV[1])
    counts[i] = redis.call('ZCARD', KEYS[i])
end
return counts
"""
#: Groups looked up per Lua call (a call blocks Redis while it runs).
GROUPS_PER_CALL = 500
EXPIRE_AND_COUNT_SHA = hashlib.sha1(EXPIRE_AND_COUNT.encode()).hexdigest()


class RedisChannelLayer(ChannelsRedisLayer):
    """channels-redis' `RedisChannelLayer` with `groups_with_members()`."""

    async def groups_with_members(self, groups) -> set[str]:
        """The groups among `groups` that have at least one member (expired members removed first)."""
        by_shard: dict[int, list[str]] = defaultdict(list)
        for group in dict.fromkeys(groups):
            assert self.require_valid_group_name(group), "Group name not valid"
            by_shard[self.consistent_hash(group)].append(group)
        expired_before = int(time.time()) - self.group_expiry
        found: set[str] = set()
        for shard, names in by_shard.items():
            connection = self.connection(shard)
            for start in range(0, len(names), GROUPS_PER_CALL):
                chunk = names[start:start + GROUPS_PER_CALL]
                keys = [self._group_key(name) for name in chunk]
                try:
                    counts = await connection.evalsha(EXPIRE_AND_COUNT_SHA, len(keys), *keys, expired_before)
                except NoScriptError:  # a Redis that has not seen the script yet (or was restarted)
                    counts = await connection.eval(EXPIRE_AND_COUNT, len(keys), *keys, expired_before)
                found.update(name for name, count in zip(chunk, counts, strict=True) if int(count))
        return found
