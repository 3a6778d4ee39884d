"""The server-side scripts of the per-key write path (one key each: they run on a cluster).

``WRITE`` is the fence of one entity hash: if its ``~applied`` (``layout.APPLIED_FIELD``) is
still what the writer read or last wrote, set the rings and the new ``~applied`` (and the TTL);
else write nothing and answer the current value. ``ADVANCE`` moves one watermark by
compare-and-set. ``PUT`` is the rebuild's absolute, unfenced write.
"""

from __future__ import annotations

import hashlib
from typing import Any

from features.online.layout import APPLIED_FIELD

# KEYS[1] entity hash; ARGV: expected ~applied ('' = none), new ~applied, TTL s (0: keep),
# then field, ring, ... -> 1, or {current ~applied} when refused (nothing written)
WRITE = f"""
local cur = redis.call('HGET', KEYS[1], '{APPLIED_FIELD}') or ''
if cur ~= ARGV[1] then return {{cur}} end
redis.call('HSET', KEYS[1], '{APPLIED_FIELD}', ARGV[2], unpack(ARGV, 4))
if ARGV[3] ~= '0' then redis.call('EXPIRE', KEYS[1], ARGV[3]) end
return 1
"""
# KEYS[1] an offset key; ARGV: expected 'offset:epoch' (absent counts as '-1:0'), new value
# -> 1, or {current value} / {} (absent) when refused
ADVANCE = """
local cur = redis.call('GET', KEYS[1])
local seen = '-1:0'
if cur then
  local o, e = string.match(cur, '^(%-?%d+):?(%d*)')
  if e == nil or e == '' then e = '0' end
  seen = (o or '') .. ':' .. e
end
if seen ~= ARGV[1] then
  if cur then return {cur} end
  return {}
end
redis.call('SET', KEYS[1], ARGV[2])
return 1
"""
# KEYS[1] entity hash; ARGV: '1' to clear ~applied (a rebuild from the log), TTL s, then
# field, ring, ... -> 1 (the rebuild's writes: absolute, unfenced)
PUT = f"""
if ARGV[1] == '1' then redis.call('HDEL', KEYS[1], '{APPLIED_FIELD}') end
redis.call('HSET', KEYS[1], unpack(ARGV, 3))
redis.call('EXPIRE', KEYS[1], ARGV[2])
return 1
"""
SCRIPTS = {name: (text, hashlib.sha1(text.encode()).hexdigest().encode())
           for name, text in (("write", WRITE), ("advance", ADVANCE), ("put", PUT))}


def sha(name: str) -> bytes:
    return SCRIPTS[name][1]


def load_scripts(node: Any) -> None:
    """Load every script on ``node`` (after its ``NOSCRIPT`` reply)."""
    for text, _ in SCRIPTS.values():
        node.script_load(text)
