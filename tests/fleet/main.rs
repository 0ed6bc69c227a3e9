//! A fleet of gateways on one key set: the `KeyStore` contract for every
//! store, and (feature `redis`) `RedisKeyStore` against a real
//! `redis-server` that each test starts on a free loopback port: records
//! encrypted at rest, atomic fenced changes, the leader lease, pub/sub
//! followers, faults, and three `signing_proxy` processes under load.
//!
//! Without `redis-server` the Redis tests fail with "install
//! redis-server"; `.ci/run` installs it.

mod contract;
#[cfg(feature = "redis")]
mod faults;
#[cfg(feature = "redis")]
mod follow;
#[cfg(all(feature = "redis", unix))]
mod kek_file;
#[cfg(feature = "redis")]
mod lease;
#[cfg(feature = "redis")]
mod proxy;
#[cfg(feature = "redis")]
mod records;
#[cfg(feature = "redis")]
mod redis_server;
#[cfg(feature = "redis")]
mod replica;
#[cfg(feature = "redis")]
#[path = "../support/mod.rs"]
mod support;
#[cfg(feature = "redis")]
mod util;
