//! [`JwksSource`]: the keys a [`JwksService`](super::JwksService) or a
//! [`DiscoveryService`](crate::discovery::DiscoveryService) publishes, from
//! one registry or merged from several.

use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::HeaderValue;

use crate::error::ConfigError;
use crate::keys::Kid;
use crate::registry::{KeyRegistry, KeySnapshot, PublishedKey, jwk_set};

/// The keys a [`JwksService`](super::JwksService) (or a
/// [`DiscoveryService`](crate::discovery::DiscoveryService)) publishes: those
/// of one [`KeyRegistry`], or those of several merged into one set. See the
/// [module docs](super#several-registries-one-jwks).
///
/// A registry converts into a source (`JwksSource::from(registry)`, or pass
/// the registry where an `impl Into<JwksSource>` is asked for): its
/// snapshot's bytes and ETag are served as they are.
/// [`merged`](Self::merged) publishes several registries as one set: the
/// merged bytes and ETag are rebuilt only when one of the registries
/// publishes a new snapshot (snapshots are compared by identity), on the
/// first request that sees it, never on every request.
///
/// A kid that two registries publish with **different** keys would make the
/// set ambiguous: such a change is refused when it would be published, with
/// an `error` event naming the kid, and the previous merged set (its bytes
/// and its ETag) keeps being served until the registries agree again. The
/// same kid with the identical public key (the same key in two registries)
/// is published once.
///
/// Cloning is cheap; clones share the merged set.
#[derive(Clone)]
pub struct JwksSource {
    inner: Source,
}

#[derive(Clone)]
enum Source {
    One(KeyRegistry),
    Merged(Arc<Merged>),
}

/// Several registries, and the set last built from them.
struct Merged {
    registries: Vec<KeyRegistry>,
    state: ArcSwap<MergedState>,
    /// Held while a new set is built, so that a change is built once.
    building: Mutex<()>,
    /// How many sets were built (and how many changes were refused): what
    /// the tests count.
    #[cfg(test)]
    builds: std::sync::atomic::AtomicUsize,
}

/// The snapshots last looked at, and the set served for them: the set built
/// from them, or, when they were refused, the previous one.
struct MergedState {
    seen: Vec<Arc<KeySnapshot>>,
    set: Arc<MergedSet>,
}

/// The merged keys of one moment, their JWK Set and its ETag.
pub(crate) struct MergedSet {
    keys: Vec<PublishedKey>,
    jwks: Bytes,
    etag: HeaderValue,
}

/// Two registries publish different keys under one kid.
struct Ambiguous {
    kid: Kid,
    first: usize,
    second: usize,
}

impl fmt::Display for Ambiguous {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "registries #{} and #{} publish different keys under the kid {:?}: the merged JWK Set \
             would be ambiguous",
            self.first,
            self.second,
            self.kid.as_str()
        )
    }
}

impl MergedSet {
    /// The keys of `snapshots`, in order, each kid once; refused when two
    /// registries give one kid different public keys.
    fn build(snapshots: &[Arc<KeySnapshot>]) -> Result<Self, Ambiguous> {
        let mut keys: Vec<PublishedKey> = Vec::new();
        let mut from: Vec<usize> = Vec::new();
        for (registry, snapshot) in snapshots.iter().enumerate() {
            for key in snapshot.keys() {
                match keys.iter().position(|k| k.kid() == key.kid()) {
                    Some(i) if keys[i].public_jwk() == key.public_jwk() => {}
                    Some(i) => {
                        return Err(Ambiguous {
                            kid: key.kid().clone(),
                            first: from[i],
                            second: registry,
                        });
                    }
                    None => {
                        keys.push(key.clone());
                        from.push(registry);
                    }
                }
            }
        }
        let (jwks, etag) = jwk_set(&keys);
        Ok(MergedSet { keys, jwks, etag })
    }
}

impl JwksSource {
    /// Publishes the keys of every registry of `registries` as one JWK Set,
    /// in their order (each registry's keys in its snapshot's order), a key
    /// that several registries hold once. The `Cache-Control` max-age of a
    /// service on it is at most the shortest
    /// [`jwks_max_age`](KeyRegistry::jwks_max_age) of the registries.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] (setting `"registries"`) when there is no registry,
    /// or when two of them publish different keys under one kid now.
    pub fn merged(registries: impl IntoIterator<Item = KeyRegistry>) -> Result<Self, ConfigError> {
        let registries: Vec<KeyRegistry> = registries.into_iter().collect();
        if registries.is_empty() {
            return Err(ConfigError::without_value(
                "registries",
                "no registry: give at least one",
            ));
        }
        let seen: Vec<Arc<KeySnapshot>> = registries.iter().map(KeyRegistry::current).collect();
        let set = MergedSet::build(&seen)
            .map_err(|ambiguous| ConfigError::without_value("registries", ambiguous.to_string()))?;
        Ok(JwksSource {
            inner: Source::Merged(Arc::new(Merged {
                registries,
                state: ArcSwap::from_pointee(MergedState {
                    seen,
                    set: Arc::new(set),
                }),
                building: Mutex::new(()),
                #[cfg(test)]
                builds: std::sync::atomic::AtomicUsize::new(1),
            })),
        })
    }

    /// The registries whose keys are published: one, or those given to
    /// [`merged`](Self::merged), in order.
    pub fn registries(&self) -> &[KeyRegistry] {
        match &self.inner {
            Source::One(registry) => std::slice::from_ref(registry),
            Source::Merged(merged) => &merged.registries,
        }
    }

    /// The longest `Cache-Control` max-age a service may send: the shortest
    /// [`jwks_max_age`](KeyRegistry::jwks_max_age) of the registries.
    pub fn jwks_max_age(&self) -> Duration {
        self.registries()
            .iter()
            .map(KeyRegistry::jwks_max_age)
            .min()
            .expect("a source has at least one registry")
    }

    /// The JWK Set (`{"keys":[...]}`) served now: one registry's snapshot
    /// bytes, or the merged set (rebuilt first if a registry changed).
    pub fn jwks_bytes(&self) -> Bytes {
        self.current().jwks_bytes().clone()
    }

    /// The strong ETag of [`jwks_bytes`](Self::jwks_bytes), quoted.
    pub fn etag(&self) -> HeaderValue {
        self.current().etag().clone()
    }

    /// The published set now.
    pub(crate) fn current(&self) -> Published {
        match &self.inner {
            Source::One(registry) => Published::Snapshot(registry.current()),
            Source::Merged(merged) => Published::Merged(merged.current()),
        }
    }
}

impl Merged {
    /// The merged set for the registries' current snapshots: the cached one
    /// while no registry changed (a comparison of pointers), else built
    /// once, under a lock, by the first caller that sees the change.
    fn current(&self) -> Arc<MergedSet> {
        let state = self.state.load();
        if self.unchanged(&state.seen) {
            return Arc::clone(&state.set);
        }
        drop(state);
        let _building = self.building.lock().unwrap_or_else(PoisonError::into_inner);
        let state = self.state.load_full();
        let seen: Vec<Arc<KeySnapshot>> =
            self.registries.iter().map(KeyRegistry::current).collect();
        if same_snapshots(&state.seen, &seen) {
            return Arc::clone(&state.set);
        }
        #[cfg(test)]
        self.builds
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let set = match MergedSet::build(&seen) {
            Ok(set) => Arc::new(set),
            Err(ambiguous) => {
                tracing::error!(
                    kid = %ambiguous.kid,
                    etag = ?state.set.etag,
                    "{ambiguous}; refusing to publish it, still serving the previous JWK Set"
                );
                // Remember the refused snapshots, so that the refusal is
                // not rebuilt (nor logged) on every request.
                Arc::clone(&state.set)
            }
        };
        self.state.store(Arc::new(MergedState {
            seen,
            set: Arc::clone(&set),
        }));
        set
    }

    /// Whether every registry still publishes the snapshot `seen` holds.
    fn unchanged(&self, seen: &[Arc<KeySnapshot>]) -> bool {
        self.registries
            .iter()
            .zip(seen)
            .all(|(registry, seen)| Arc::ptr_eq(&registry.current(), seen))
    }
}

fn same_snapshots(a: &[Arc<KeySnapshot>], b: &[Arc<KeySnapshot>]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(a, b)| Arc::ptr_eq(a, b))
}

impl From<KeyRegistry> for JwksSource {
    fn from(registry: KeyRegistry) -> Self {
        JwksSource {
            inner: Source::One(registry),
        }
    }
}

impl fmt::Debug for JwksSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The set served last (a merged one is not rebuilt for this).
        let (keys, etag) = match &self.inner {
            Source::One(registry) => {
                let snapshot = registry.current();
                (snapshot.keys().len(), snapshot.etag().clone())
            }
            Source::Merged(merged) => {
                let state = merged.state.load();
                (state.set.keys.len(), state.set.etag.clone())
            }
        };
        f.debug_struct("JwksSource")
            .field("registries", &self.registries().len())
            .field("keys", &keys)
            .field("etag", &etag)
            .finish_non_exhaustive()
    }
}

/// The set a source publishes at one moment.
#[derive(Clone)]
pub(crate) enum Published {
    Snapshot(Arc<KeySnapshot>),
    Merged(Arc<MergedSet>),
}

impl Published {
    pub(crate) fn keys(&self) -> &[PublishedKey] {
        match self {
            Published::Snapshot(snapshot) => snapshot.keys(),
            Published::Merged(set) => &set.keys,
        }
    }

    pub(crate) fn jwks_bytes(&self) -> &Bytes {
        match self {
            Published::Snapshot(snapshot) => snapshot.jwks_bytes(),
            Published::Merged(set) => &set.jwks,
        }
    }

    pub(crate) fn etag(&self) -> &HeaderValue {
        match self {
            Published::Snapshot(snapshot) => snapshot.etag(),
            Published::Merged(set) => &set.etag,
        }
    }

    /// The one active key, for one registry (several have one each).
    #[cfg_attr(not(feature = "metrics"), allow(dead_code))]
    pub(crate) fn active(&self) -> Option<&PublishedKey> {
        match self {
            Published::Snapshot(snapshot) => snapshot.active(),
            Published::Merged(_) => None,
        }
    }

    /// Whether both are the same set (the same snapshot or merged set, not
    /// merely equal ones).
    pub(crate) fn is(&self, other: &Published) -> bool {
        match (self, other) {
            (Published::Snapshot(a), Published::Snapshot(b)) => Arc::ptr_eq(a, b),
            (Published::Merged(a), Published::Merged(b)) => Arc::ptr_eq(a, b),
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;

    use super::*;
    use crate::keys::{Algorithm, SigningKey};

    fn builds(source: &JwksSource) -> usize {
        match &source.inner {
            Source::Merged(merged) => merged.builds.load(Ordering::Relaxed),
            Source::One(_) => unreachable!(),
        }
    }

    #[test]
    fn the_merged_set_is_built_once_per_change_never_per_request() {
        let a = KeyRegistry::generate(Algorithm::ES256).unwrap();
        let b = KeyRegistry::generate(Algorithm::EdDSA).unwrap();
        let source = JwksSource::merged([a.clone(), b.clone()]).unwrap();
        assert_eq!(builds(&source), 1);
        let first = source.current();
        for _ in 0..100 {
            assert!(source.current().is(&first));
        }
        assert_eq!(builds(&source), 1, "no change, no build");

        b.add_next(SigningKey::generate(Algorithm::EdDSA).unwrap())
            .unwrap();
        let second = source.current();
        assert!(!second.is(&first));
        assert_ne!(second.etag(), first.etag());
        for _ in 0..100 {
            assert!(source.current().is(&second));
        }
        assert_eq!(builds(&source), 2, "one build for the one change");
        assert_eq!(second.keys().len(), 3);
    }

    #[test]
    fn a_refused_change_is_looked_at_once_and_the_old_set_stays() {
        let a = KeyRegistry::generate(Algorithm::ES256).unwrap();
        let b = KeyRegistry::generate(Algorithm::ES256).unwrap();
        let source = JwksSource::merged([a.clone(), b.clone()]).unwrap();
        let before = source.current();
        // Another key, given `a`'s kid, in `b`.
        let kid = a.current().active().unwrap().kid().clone();
        let clash = SigningKey::generate(Algorithm::ES256)
            .unwrap()
            .with_kid(kid);
        b.add_next(clash).unwrap();
        for _ in 0..10 {
            let now = source.current();
            assert!(now.is(&before));
            assert_eq!(now.etag(), before.etag());
        }
        assert_eq!(builds(&source), 2, "the refusal is built once");
    }
}
