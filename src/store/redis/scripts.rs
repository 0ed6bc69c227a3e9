//! The Lua scripts: each runs atomically in Redis, sent with `EVALSHA`
//! (and loaded with `SCRIPT LOAD` the first time Redis does not know it).

use std::sync::LazyLock;

use redis::Script;

/// One change of the key set: fence, version check, writes, new version,
/// notification, all or nothing.
///
/// `KEYS`: the keys hash, the version, the lease. `ARGV`: mode (`lease`: the
/// lease must hold the token; `rewrap`: no lease, the version must be
/// given), token, expected version (`""`: none), channel, number of
/// removals, the removed kids, then kid/record pairs to save.
///
/// Returns `{1, new version}`, `{0, "fenced"}` or `{0, "conflict", found}`.
pub(super) static COMMIT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local mode, token, expected = ARGV[1], ARGV[2], ARGV[3]
if mode == 'lease' then
  if redis.call('GET', KEYS[3]) ~= token then
    return {0, 'fenced'}
  end
elseif mode ~= 'rewrap' or expected == '' then
  return redis.error_reply('tower-jwt-signer: bad commit mode')
end
local version = tonumber(redis.call('GET', KEYS[2]) or '0')
if expected ~= '' and tonumber(expected) ~= version then
  return {0, 'conflict', version}
end
local removals = tonumber(ARGV[5])
local i = 6
for _ = 1, removals do
  redis.call('HDEL', KEYS[1], ARGV[i])
  i = i + 1
end
while i < #ARGV do
  redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
  i = i + 2
end
version = redis.call('INCR', KEYS[2])
redis.call('PUBLISH', ARGV[4], version)
return {1, version}
"#,
    )
});

/// Renews the lease if it still holds our token: `1` renewed, `0` not ours.
pub(super) static RENEW: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"#,
    )
});

/// Deletes the lease if it still holds our token: `1` released, `0` not
/// ours (expired, or another process leads).
pub(super) static RELEASE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"#,
    )
});
