//! A JWK Set fetched over HTTP and cached.

use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::Bytes;
use futures_util::FutureExt as _;
use futures_util::future::{BoxFuture, Shared};
use http::header::{self, HeaderMap, HeaderValue};
use http::{Request, StatusCode, Uri};
use http_body_util::{BodyExt as _, Empty, LengthLimitError, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio::time::Instant;

use super::jwk::{JwkSet, JwkSetError};
use crate::discovery::{absolute_http_url, discovery_url, is_loopback, issuer_uri};
use crate::error::{ConfigError, truncate};
use crate::keys::OutOfTime;

/// The default request timeout (connect, headers and body together): 5 s.
const DEFAULT_FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// The default response size limit: 1 MiB.
const DEFAULT_MAX_JWKS_LEN: usize = 1024 * 1024;
/// The default size limit of a discovery document: 64 KiB.
const DEFAULT_MAX_DISCOVERY_LEN: usize = 64 * 1024;
/// The default shortest cache lifetime, whatever `Cache-Control` says: 60 s.
const DEFAULT_MIN_CACHE_TTL: Duration = Duration::from_secs(60);
/// The default longest cache lifetime, whatever `Cache-Control` says: 24 h.
const DEFAULT_MAX_CACHE_TTL: Duration = Duration::from_secs(24 * 60 * 60);
/// The cache lifetime when the response has no `max-age`: 5 min.
const DEFAULT_CACHE_TTL: Duration = Duration::from_secs(5 * 60);
/// The default cooldown between refreshes for unknown kids, and between
/// retries after a failed fetch: 30 s.
const DEFAULT_REFRESH_COOLDOWN: Duration = Duration::from_secs(30);
/// How long the last good set is used while fetches fail, by default: 24 h.
const DEFAULT_MAX_STALE: Duration = Duration::from_secs(24 * 60 * 60);
/// No duration setting may be longer (100 years): deadlines are computed
/// as `Instant + setting`.
const MAX_SETTING: Duration = Duration::from_secs(100 * 365 * 24 * 60 * 60);
/// While no set is usable, the first retry after a failed fetch comes this
/// soon; each further failure doubles the wait, up to the cooldown.
const FIRST_RETRY: Duration = Duration::from_secs(1);

/// A remote JWK Set (for example a gateway's
/// [`JWKS_PATH`](crate::JWKS_PATH)), fetched with a hyper client and cached;
/// or found through an issuer's OpenID discovery document
/// ([`from_issuer`](Self::from_issuer)).
///
/// Cloning is cheap; clones share the cache. Readers take the cached set
/// from an atomic snapshot: a request never waits for a lock, and no lock
/// is held across an `.await`.
///
/// * **Fetching:** `GET` with a timeout (5 s), a size limit (1 MiB),
///   redirects not followed, only `200 OK` accepted (`304` when
///   revalidating). `http` URLs; `https` too with the `rustls` feature
///   (Mozilla's root store by default, or
///   [`RemoteJwksBuilder::tls_config`]).
/// * **Caching:** for `Cache-Control: max-age`, clamped to 60 s..24 h
///   (5 min without the header; `no-cache`/`no-store` count as the
///   minimum); once stale, the next request starts a refresh in the
///   background, with `If-None-Match` when the server sent an `ETag`, and
///   keeps using the cached set meanwhile. A `304` keeps the set and
///   restarts its lifetime.
/// * **Unknown kid:** a token whose `kid` is not in the set triggers one
///   refresh, and waits for it. Such refreshes are rate limited by a
///   cooldown (30 s) and shared: concurrent callers wait for the same fetch,
///   so a flood of unknown kids makes at most one fetch per cooldown.
/// * **Failures:** a failed fetch is logged (`warn`) and the last good set
///   stays in use for up to 24 h after its last successful fetch; no fetch
///   is retried before the cooldown has passed. While there is no usable set
///   (a backend that starts before its gateway), retries come sooner: 1 s
///   after the first failure, doubling with each further one, up to the
///   cooldown. Before the first successful
///   fetch (or once the last good set is too old) verification fails with
///   [`VerifyError::KeysUnavailable`](super::VerifyError::KeysUnavailable),
///   which the middleware answers with 503.
/// * **Bad keys:** keys that cannot be used are skipped one by one and
///   logged; a set with private members or duplicate kids is refused whole
///   (see [`JwkSet`]).
/// * **Parsing:** the set is parsed and its keys checked on tokio's
///   blocking pool (`spawn_blocking`), never on a runtime worker: the RSA
///   prime test costs one modular exponentiation per key (about 7 ms at
///   2048 bits, 0.37 s at 8192), so a large set takes seconds of CPU. The
///   parse counts against the fetch's timeout; at the deadline it stops
///   (between two keys or two rounds of the prime test) and the fetch fails
///   with [`FetchError::Timeout`], keeping the last good set.
///
/// Cache times follow `tokio::time::Instant`, so tests with paused time can
/// age the cache.
///
/// # From an issuer URL
///
/// [`from_issuer`](Self::from_issuer) (or
/// [`issuer_builder`](Self::issuer_builder)) starts from the issuer: each
/// fetch first reads `ISSUER/.well-known/openid-configuration` (the
/// [discovery](crate::discovery) document; no redirects, only `200`, at
/// most 64 KiB by default,
/// [`max_discovery_len`](RemoteJwksBuilder::max_discovery_len)), then the
/// JWKS at its `jwks_uri` (the [`timeout`](RemoteJwksBuilder::timeout)
/// bounds both requests together), so the document is refetched on the JWKS's
/// schedule (cache lifetime, unknown kids, cooldown, single flight), and a
/// failure keeps the last good set as any failed fetch does. The document
/// is refused, with [`FetchError::Discovery`], when:
///
/// * its `issuer` is not exactly the configured issuer (RFC 8414 §3.3, the
///   mix-up defence: a document of another issuer never chooses the keys),
///   with a `warn` event naming both;
/// * it is not a JSON object, or `issuer` or `jwks_uri` is missing or not a
///   string;
/// * `jwks_uri` is not an absolute `http(s)` URL, or holds credentials;
/// * `jwks_uri` is plain `http` while either it or the issuer is not on a
///   loopback address (`localhost`, 127.0.0.0/8, `::1`), unless
///   [`allow_http`](RemoteJwksBuilder::allow_http) says otherwise: the keys
///   must come over TLS.
///
/// ```
/// use tower_jwt_signer::RemoteJwks;
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// // A gateway on this host: plain http is allowed on loopback.
/// let jwks = RemoteJwks::from_issuer("http://127.0.0.1:8080")?;
/// assert_eq!(jwks.issuer(), Some("http://127.0.0.1:8080"));
/// assert_eq!(jwks.url(), "http://127.0.0.1:8080/.well-known/openid-configuration");
///
/// // Elsewhere, https (feature `rustls`), unless you opt in.
/// let err = RemoteJwks::from_issuer("http://gateway.internal").unwrap_err();
/// assert_eq!(err.setting(), "issuer");
/// let jwks = RemoteJwks::issuer_builder("http://gateway.internal")
///     .allow_http(true)
///     .build()?;
/// # let _ = jwks;
/// # Ok(())
/// # }
/// ```
///
/// # Example
///
/// ```
/// use std::time::Duration;
/// use tower_jwt_signer::RemoteJwks;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let jwks = RemoteJwks::builder("http://127.0.0.1:8080/.well-known/otoroshi/security/jwks.json")
///     .timeout(Duration::from_secs(2))
///     .refresh_cooldown(Duration::from_secs(10))
///     .build()?;
/// // At start-up, fail fast if the gateway cannot be reached:
/// // jwks.prefetch().await?;
/// # let _ = jwks;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct RemoteJwks {
    inner: Arc<Remote>,
}

/// Plain HTTP, or HTTP and HTTPS with the `rustls` feature.
#[cfg(not(feature = "rustls"))]
type Connector = HttpConnector;
#[cfg(feature = "rustls")]
type Connector = hyper_rustls::HttpsConnector<HttpConnector>;

struct Remote {
    /// The JWKS, or with discovery the discovery document.
    uri: Uri,
    discovery: Option<Discovery>,
    client: Client<Connector, Empty<Bytes>>,
    config: Config,
    cache: ArcSwap<Cache>,
    control: Mutex<Control>,
}

#[derive(Debug, Clone)]
struct Config {
    timeout: Duration,
    max_len: usize,
    min_ttl: Duration,
    max_ttl: Duration,
    default_ttl: Duration,
    cooldown: Duration,
    max_stale: Duration,
}

/// Where the JWKS is found through discovery.
#[derive(Debug)]
struct Discovery {
    /// As configured: the document's `issuer` must be exactly this.
    issuer: String,
    /// Whether `jwks_uri` may be plain http off loopback.
    allow_http: bool,
    /// The issuer is on a loopback address.
    loopback: bool,
    max_len: usize,
}

/// What readers see. Replaced whole after each fetch; only the fetch task
/// writes it, and only one fetch runs at a time.
struct Cache {
    set: Option<Arc<JwkSet>>,
    /// Where `set` came from (with discovery, the last `jwks_uri`).
    source: Option<Uri>,
    etag: Option<HeaderValue>,
    fresh_until: Instant,
    usable_until: Instant,
    last_error: Option<Arc<str>>,
}

/// Which fetch may start. Locked briefly, never across an `.await`.
#[derive(Default)]
struct Control {
    inflight: Option<SharedFetch>,
    retry_after: Option<Instant>,
    unknown_kid_after: Option<Instant>,
    /// Failed fetches since the last successful one.
    failures: u32,
}

/// A fetch that several callers can wait for.
pub(crate) type SharedFetch = Shared<BoxFuture<'static, Result<(), FetchError>>>;

/// What [`RemoteJwks::keys_now`] found.
pub(crate) enum Keys {
    /// A usable set.
    Ready(Arc<JwkSet>),
    /// No usable set; this fetch may bring one.
    Wait(SharedFetch),
    /// No usable set and no fetch allowed now.
    Unavailable(Arc<str>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Trigger {
    /// No usable set.
    NoKeys,
    /// The set is past its cache lifetime.
    Expired,
    /// A token named a kid the set does not have.
    UnknownKid,
    /// `prefetch`: always fetch (or join the running fetch).
    Forced,
}

enum Fetched {
    Fresh {
        set: JwkSet,
        source: Uri,
        etag: Option<HeaderValue>,
        ttl: Duration,
    },
    NotModified {
        etag: Option<HeaderValue>,
        ttl: Duration,
    },
}

impl RemoteJwks {
    /// A remote set at `url` with the default settings.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] (setting `"url"`) as [`RemoteJwksBuilder::build`]:
    /// the URL is not an absolute `http` URL, or holds credentials.
    pub fn new(url: impl AsRef<str>) -> Result<Self, ConfigError> {
        Self::builder(url).build()
    }

    /// A builder for the timeout, size limit, cache bounds and cooldown.
    /// Its setters only record their value; [`RemoteJwksBuilder::build`]
    /// checks them.
    pub fn builder(url: impl AsRef<str>) -> RemoteJwksBuilder {
        RemoteJwksBuilder {
            #[cfg(feature = "rustls")]
            tls: None,
            url: url.as_ref().to_owned(),
            issuer: None,
            allow_http: false,
            max_discovery_len: DEFAULT_MAX_DISCOVERY_LEN,
            config: Config {
                timeout: DEFAULT_FETCH_TIMEOUT,
                max_len: DEFAULT_MAX_JWKS_LEN,
                min_ttl: DEFAULT_MIN_CACHE_TTL,
                max_ttl: DEFAULT_MAX_CACHE_TTL,
                default_ttl: DEFAULT_CACHE_TTL,
                cooldown: DEFAULT_REFRESH_COOLDOWN,
                max_stale: DEFAULT_MAX_STALE,
            },
        }
    }

    /// The keys of `issuer`, found through its OpenID discovery document,
    /// with the default settings. See [From an issuer URL](Self#from-an-issuer-url).
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] as [`RemoteJwksBuilder::build`]; setting
    /// `"issuer"`: not an absolute `http(s)` URL, with credentials, a query
    /// or a fragment, or plain `http` to a host that is not loopback.
    pub fn from_issuer(issuer: impl AsRef<str>) -> Result<Self, ConfigError> {
        Self::issuer_builder(issuer).build()
    }

    /// A builder for the keys of `issuer`, found through its discovery
    /// document; the settings of [`builder`](Self::builder), plus
    /// [`allow_http`](RemoteJwksBuilder::allow_http) and
    /// [`max_discovery_len`](RemoteJwksBuilder::max_discovery_len).
    pub fn issuer_builder(issuer: impl AsRef<str>) -> RemoteJwksBuilder {
        let issuer = issuer.as_ref();
        let mut builder = Self::builder(discovery_url(issuer));
        builder.issuer = Some(issuer.to_owned());
        builder
    }

    /// The URL fetched first: the set's, or with discovery the discovery
    /// document's.
    pub fn url(&self) -> &Uri {
        &self.inner.uri
    }

    /// The issuer the keys are discovered from, if built with
    /// [`from_issuer`](Self::from_issuer).
    pub fn issuer(&self) -> Option<&str> {
        self.inner.discovery.as_ref().map(|d| d.issuer.as_str())
    }

    /// Where the last good set came from: the configured URL, or with
    /// discovery the `jwks_uri` the document gave; `None` before the first
    /// successful fetch.
    pub fn jwks_uri(&self) -> Option<Uri> {
        self.inner.cache.load().source.clone()
    }

    /// Fetches the set now (or waits for the fetch already running), so
    /// that a service can fail fast at start-up.
    ///
    /// # Errors
    ///
    /// The [`FetchError`] of the fetch. The last good set, if any, stays in
    /// use.
    pub async fn prefetch(&self) -> Result<(), FetchError> {
        match self.start_fetch(Instant::now(), Trigger::Forced) {
            Some(fetch) => fetch.await,
            None => Err(FetchError::NoRuntime),
        }
    }

    /// The last good set, even if stale; `None` before the first successful
    /// fetch.
    pub fn current(&self) -> Option<Arc<JwkSet>> {
        self.inner.cache.load().set.clone()
    }

    /// The error of the last fetch, if it failed.
    pub fn last_error(&self) -> Option<String> {
        self.inner
            .cache
            .load()
            .last_error
            .as_deref()
            .map(str::to_owned)
    }

    /// The set to verify with now, starting a fetch when there is none or
    /// it is stale.
    pub(crate) fn keys_now(&self) -> Keys {
        let now = Instant::now();
        let cache = self.inner.cache.load();
        if let Some(set) = cache.usable(now) {
            if now >= cache.fresh_until {
                // Refresh in the background; keep verifying meanwhile.
                drop(self.start_fetch(now, Trigger::Expired));
            }
            return Keys::Ready(set);
        }
        match self.start_fetch(now, Trigger::NoKeys) {
            Some(fetch) => Keys::Wait(fetch),
            None => {
                // A fetch may have finished in between.
                let cache = self.inner.cache.load();
                match cache.usable(now) {
                    Some(set) => Keys::Ready(set),
                    None => Keys::Unavailable(self.unavailable_reason(&cache, now)),
                }
            }
        }
    }

    /// A refresh for an unknown kid, if the cooldown allows one (or one is
    /// already running).
    pub(crate) fn refresh_for_unknown_kid(&self) -> Option<SharedFetch> {
        self.start_fetch(Instant::now(), Trigger::UnknownKid)
    }

    /// The usable set after a fetch, or why there is none.
    pub(crate) fn usable_set(&self) -> Result<Arc<JwkSet>, Arc<str>> {
        let now = Instant::now();
        let cache = self.inner.cache.load();
        cache
            .usable(now)
            .ok_or_else(|| self.unavailable_reason(&cache, now))
    }

    fn unavailable_reason(&self, cache: &Cache, now: Instant) -> Arc<str> {
        let url = &self.inner.uri;
        let text = match (&cache.set, &cache.last_error) {
            (Some(_), Some(err)) if now >= cache.usable_until => format!(
                "the last good JWKS from {url} is too old and the latest fetch failed: {err}"
            ),
            (Some(_), None) if now >= cache.usable_until => {
                format!("the last good JWKS from {url} is too old")
            }
            (_, Some(err)) => format!("the JWKS at {url} could not be fetched: {err}"),
            _ => format!("the JWKS at {url} has not been fetched yet"),
        };
        Arc::from(text)
    }

    /// Starts a fetch if `trigger` allows one now, or joins the running one.
    fn start_fetch(&self, now: Instant, trigger: Trigger) -> Option<SharedFetch> {
        let remote = &self.inner;
        let mut control = remote
            .control
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(fetch) = &control.inflight {
            return Some(fetch.clone());
        }
        if trigger != Trigger::Forced && control.retry_after.is_some_and(|at| now < at) {
            return None;
        }
        match trigger {
            Trigger::Forced => {}
            Trigger::NoKeys => {
                if remote.cache.load().usable(now).is_some() {
                    return None;
                }
            }
            Trigger::Expired => {
                if now < remote.cache.load().fresh_until {
                    return None;
                }
            }
            Trigger::UnknownKid => {
                if control.unknown_kid_after.is_some_and(|at| now < at) {
                    return None;
                }
                control.unknown_kid_after = Some(now + remote.config.cooldown);
            }
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            tracing::warn!(url = %remote.uri, "cannot fetch the JWKS outside a tokio runtime");
            return None;
        };
        tracing::debug!(url = %remote.uri, ?trigger, "fetching the JWKS");
        // The fetch runs in its own task, so it completes (and updates the
        // cache) even when every caller that waits for it goes away.
        let task = runtime.spawn(fetch_task(Arc::clone(remote)));
        let fetch: BoxFuture<'static, Result<(), FetchError>> = Box::pin(async move {
            match task.await {
                Ok(result) => result,
                Err(err) => Err(FetchError::Aborted(err.to_string())),
            }
        });
        let fetch = fetch.shared();
        control.inflight = Some(fetch.clone());
        Some(fetch)
    }
}

impl Cache {
    fn usable(&self, now: Instant) -> Option<Arc<JwkSet>> {
        match &self.set {
            Some(set) if now < self.usable_until => Some(Arc::clone(set)),
            _ => None,
        }
    }
}

/// Fetches once, updates the cache, and lets the next fetch start.
async fn fetch_task(remote: Arc<Remote>) -> Result<(), FetchError> {
    let result = fetch_once(&remote).await;
    let now = Instant::now();
    let old = remote.cache.load_full();
    let outcome = match result {
        Ok(Fetched::Fresh {
            set,
            source,
            etag,
            ttl,
        }) => {
            // Keys anyone could forge for were logged as they were refused.
            for skipped in set.skipped().iter().filter(|s| s.weakness().is_none()) {
                tracing::warn!(url = %remote.uri, "JWKS key skipped: {skipped}");
            }
            tracing::debug!(url = %remote.uri, keys = set.len(), ttl = ?ttl, "JWKS fetched");
            remote.cache.store(Arc::new(Cache {
                set: Some(Arc::new(set)),
                source: Some(source),
                etag,
                fresh_until: now + ttl,
                usable_until: now + remote.config.max_stale,
                last_error: None,
            }));
            Ok(())
        }
        Ok(Fetched::NotModified { etag, ttl }) => {
            tracing::debug!(url = %remote.uri, ttl = ?ttl, "JWKS not modified");
            remote.cache.store(Arc::new(Cache {
                set: old.set.clone(),
                source: old.source.clone(),
                etag: etag.or_else(|| old.etag.clone()),
                fresh_until: now + ttl,
                usable_until: now + remote.config.max_stale,
                last_error: None,
            }));
            Ok(())
        }
        Err(err) => {
            tracing::warn!(
                url = %remote.uri,
                error = %err,
                has_last_good_set = old.set.is_some(),
                "JWKS fetch failed; keeping the last good set"
            );
            remote.cache.store(Arc::new(Cache {
                set: old.set.clone(),
                source: old.source.clone(),
                etag: old.etag.clone(),
                fresh_until: old.fresh_until,
                usable_until: old.usable_until,
                last_error: Some(Arc::from(err.to_string())),
            }));
            Err(err)
        }
    };
    crate::metrics::remote_fetch(outcome.is_ok());
    let mut control = remote
        .control
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    control.inflight = None;
    control.failures = match outcome {
        Ok(()) => 0,
        Err(_) => control.failures.saturating_add(1),
    };
    let has_usable_set = remote.cache.load().usable(now).is_some();
    control.retry_after = outcome
        .is_err()
        .then(|| now + retry_delay(remote.config.cooldown, has_usable_set, control.failures));
    outcome
}

/// How long to wait before retrying after `failures` failed fetches in a
/// row: the cooldown while a usable set covers for the failure, else a
/// backoff from [`FIRST_RETRY`] doubling up to the cooldown.
fn retry_delay(cooldown: Duration, has_usable_set: bool, failures: u32) -> Duration {
    if has_usable_set {
        return cooldown;
    }
    let doublings = failures.saturating_sub(1).min(16);
    FIRST_RETRY.saturating_mul(1 << doublings).min(cooldown)
}

async fn fetch_once(remote: &Remote) -> Result<Fetched, FetchError> {
    let config = &remote.config;
    // The parse runs on a blocking thread, which the timeout below cannot
    // stop: it gives up by itself at the same deadline.
    let deadline = std::time::Instant::now().checked_add(config.timeout);
    let work = async {
        let source = match &remote.discovery {
            None => remote.uri.clone(),
            Some(discovery) => discover(remote, discovery).await?,
        };
        // Revalidate only a set that came from this very URL.
        let revalidate = {
            let cache = remote.cache.load();
            match &cache.set {
                Some(_) if cache.source.as_ref() == Some(&source) => cache.etag.clone(),
                _ => None,
            }
        };
        let mut request = Request::get(source.clone()).header(
            header::ACCEPT,
            HeaderValue::from_static("application/jwk-set+json, application/json"),
        );
        if let Some(etag) = &revalidate {
            request = request.header(header::IF_NONE_MATCH, etag);
        }
        let request = request
            .body(Empty::new())
            .map_err(|err| FetchError::Http(err.to_string()))?;
        let response = remote
            .client
            .request(request)
            .await
            .map_err(|err| FetchError::Http(error_chain(&err)))?;
        let status = response.status();
        let etag = response.headers().get(header::ETAG).cloned();
        let ttl = cache_ttl(response.headers(), config);
        if status == StatusCode::NOT_MODIFIED && revalidate.is_some() {
            return Ok(Fetched::NotModified { etag, ttl });
        }
        let body = ok_body(response, config.max_len).await?;
        // Checking the keys costs CPU (the RSA prime test: about 7 ms for a
        // 2048-bit key, 0.37 s for 8192 bits; a large set, seconds): off the
        // runtime's workers, and within the fetch's time bound.
        let url = source.clone();
        let parsed = tokio::task::spawn_blocking(move || {
            tracing::debug!(url = %url, bytes = body.len(), "parsing the JWKS");
            JwkSet::parse_until(&body, deadline)
        })
        .await
        .map_err(|err| FetchError::Aborted(err.to_string()))?;
        let set = match parsed {
            Ok(result) => result.map_err(FetchError::InvalidSet)?,
            Err(OutOfTime) => return Err(FetchError::Timeout(config.timeout)),
        };
        Ok(Fetched::Fresh {
            set,
            source,
            etag,
            ttl,
        })
    };
    tokio::time::timeout(config.timeout, work)
        .await
        .map_err(|_| FetchError::Timeout(config.timeout))?
}

/// The body of a `200 OK`, at most `max_len` bytes; a redirect, another
/// status or a larger body is an error.
async fn ok_body(
    response: http::Response<hyper::body::Incoming>,
    max_len: usize,
) -> Result<Bytes, FetchError> {
    let status = response.status();
    if status.is_redirection() {
        return Err(FetchError::Redirect(status.as_u16()));
    }
    if status != StatusCode::OK {
        return Err(FetchError::Status(status.as_u16()));
    }
    let declared = response
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > max_len as u64) {
        return Err(FetchError::TooLarge { limit: max_len });
    }
    Ok(Limited::new(response.into_body(), max_len)
        .collect()
        .await
        .map_err(|err| {
            if err.downcast_ref::<LengthLimitError>().is_some() {
                FetchError::TooLarge { limit: max_len }
            } else {
                FetchError::Http(error_chain(&*err))
            }
        })?
        .to_bytes())
}

/// Reads the discovery document and returns its `jwks_uri`, checked.
async fn discover(remote: &Remote, discovery: &Discovery) -> Result<Uri, FetchError> {
    let request = Request::get(remote.uri.clone())
        .header(header::ACCEPT, HeaderValue::from_static("application/json"))
        .body(Empty::new())
        .map_err(|err| FetchError::Http(err.to_string()))?;
    let response = remote
        .client
        .request(request)
        .await
        .map_err(|err| FetchError::Http(error_chain(&err)))?;
    let body = ok_body(response, discovery.max_len).await?;
    let jwks_uri = discovery.jwks_uri(&body).map_err(|err| {
        if let DiscoveryError::IssuerMismatch { expected, found } = &err {
            tracing::warn!(
                url = %remote.uri,
                expected = %expected,
                found = ?found,
                "the discovery document names another issuer; refusing its jwks_uri (RFC 8414 section 3.3)"
            );
        }
        FetchError::Discovery(err)
    })?;
    tracing::debug!(url = %remote.uri, jwks_uri = %jwks_uri, "discovery document read");
    Ok(jwks_uri)
}

impl Discovery {
    /// The `jwks_uri` of the document `body`, if the document is this
    /// issuer's and the URL is acceptable.
    fn jwks_uri(&self, body: &[u8]) -> Result<Uri, DiscoveryError> {
        /// The members read; any other is ignored, a repeated one refused.
        #[derive(serde::Deserialize)]
        struct Document {
            issuer: Option<serde_json::Value>,
            jwks_uri: Option<serde_json::Value>,
        }
        let document: Document = serde_json::from_slice(body)
            .map_err(|err| DiscoveryError::Malformed(truncate(&err.to_string())))?;
        let string = |value: Option<serde_json::Value>, member: &'static str| match value {
            Some(serde_json::Value::String(text)) => Ok(text),
            Some(_) => Err(DiscoveryError::Malformed(format!(
                "`{member}` is not a string"
            ))),
            None => Err(DiscoveryError::Malformed(format!("no `{member}`"))),
        };
        let issuer = string(document.issuer, "issuer")?;
        if issuer != self.issuer {
            return Err(DiscoveryError::IssuerMismatch {
                expected: self.issuer.clone(),
                found: truncate(&issuer),
            });
        }
        let text = string(document.jwks_uri, "jwks_uri")?;
        let uri = absolute_http_url(&text).map_err(|reason| DiscoveryError::InvalidJwksUri {
            uri: masked_url(&text),
            reason,
        })?;
        if uri.scheme_str() == Some("http")
            && !self.allow_http
            && !(self.loopback && is_loopback(&uri))
        {
            return Err(DiscoveryError::InsecureJwksUri(masked_url(&text)));
        }
        #[cfg(not(feature = "rustls"))]
        if uri.scheme_str() == Some("https") {
            return Err(DiscoveryError::InvalidJwksUri {
                uri: masked_url(&text),
                reason: "https needs the rustls feature",
            });
        }
        Ok(uri)
    }
}

/// The cache lifetime a response asks for, clamped to the configured range.
fn cache_ttl(headers: &HeaderMap, config: &Config) -> Duration {
    let mut max_age = None;
    let mut no_cache = false;
    for value in headers.get_all(header::CACHE_CONTROL) {
        let Ok(value) = value.to_str() else { continue };
        for directive in value.split(',') {
            let (name, argument) = match directive.split_once('=') {
                Some((name, argument)) => (name.trim(), Some(argument.trim().trim_matches('"'))),
                None => (directive.trim(), None),
            };
            if name.eq_ignore_ascii_case("max-age") {
                if let Some(seconds) = argument.and_then(|a| a.parse::<u64>().ok()) {
                    max_age = Some(Duration::from_secs(seconds));
                }
            } else if name.eq_ignore_ascii_case("no-cache") || name.eq_ignore_ascii_case("no-store")
            {
                no_cache = true;
            }
        }
    }
    let ttl = if no_cache {
        Duration::ZERO
    } else {
        max_age.unwrap_or(config.default_ttl)
    };
    ttl.clamp(config.min_ttl, config.max_ttl)
}

fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

impl fmt::Debug for RemoteJwks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let cache = self.inner.cache.load();
        f.debug_struct("RemoteJwks")
            .field("url", &self.inner.uri)
            .field("config", &self.inner.config)
            .field("keys", &cache.set.as_ref().map(|s| s.len()))
            .field("last_error", &cache.last_error)
            .finish()
    }
}

/// Builds a [`RemoteJwks`]; see its docs for the defaults.
#[must_use]
#[derive(Debug, Clone)]
pub struct RemoteJwksBuilder {
    url: String,
    /// With discovery: the issuer (`url` is its discovery document).
    issuer: Option<String>,
    allow_http: bool,
    max_discovery_len: usize,
    config: Config,
    #[cfg(feature = "rustls")]
    tls: Option<Arc<rustls::ClientConfig>>,
}

impl RemoteJwksBuilder {
    /// The time limit of one fetch: connecting, the response headers and the
    /// body together (default 5 s; more than zero, at most 100 years).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.config.timeout = timeout;
        self
    }

    /// The largest response body accepted, in bytes (default 1 MiB; more
    /// than zero).
    pub fn max_response_len(mut self, max: usize) -> Self {
        self.config.max_len = max;
        self
    }

    /// The range `Cache-Control: max-age` is clamped to (default 60 s to
    /// 24 h; `min` at most `max`, `max` at most 100 years).
    ///
    /// The lower bound is how long this verifier keeps a set at the least,
    /// whatever the server says: with a gateway that rotates keys more
    /// often than every few minutes, lower it to at most the gateway's
    /// prepublish time (see the
    /// [rotation docs](crate::rotation#what-verifiers-need)).
    pub fn cache_ttl_bounds(mut self, min: Duration, max: Duration) -> Self {
        self.config.min_ttl = min;
        self.config.max_ttl = max;
        self
    }

    /// The cache lifetime when the response has no `max-age` (default
    /// 5 min; clamped to the bounds; at most 100 years).
    pub fn default_cache_ttl(mut self, ttl: Duration) -> Self {
        self.config.default_ttl = ttl;
        self
    }

    /// The cooldown between refreshes for unknown kids, and between retries
    /// after a failed fetch (default 30 s; at most 100 years).
    ///
    /// A token whose kid is not in the cached set makes this verifier fetch
    /// the set again, at most once per cooldown: a new key that reaches the
    /// verifier before the set that lists it is refused until then.
    pub fn refresh_cooldown(mut self, cooldown: Duration) -> Self {
        self.config.cooldown = cooldown;
        self
    }

    /// How long after its last successful fetch the last good set is still
    /// used while fetches fail (default 24 h; more than zero, at most 100
    /// years).
    pub fn max_stale(mut self, max_stale: Duration) -> Self {
        self.config.max_stale = max_stale;
        self
    }

    /// With discovery ([`RemoteJwks::issuer_builder`]): accept plain `http`
    /// for the issuer and the `jwks_uri` off loopback addresses (default
    /// `false`: `http` only when both are on loopback, https otherwise).
    /// Anyone on the network path could then choose the keys your tokens are
    /// verified with; only for a network you trust end to end.
    pub fn allow_http(mut self, allow: bool) -> Self {
        self.allow_http = allow;
        self
    }

    /// With discovery: the largest discovery document accepted, in bytes
    /// (default 64 KiB; more than zero).
    pub fn max_discovery_len(mut self, max: usize) -> Self {
        self.max_discovery_len = max;
        self
    }

    /// The TLS settings for `https` URLs (default: rustls with aws-lc-rs,
    /// its safe default protocol versions, and Mozilla's root store from
    /// `webpki-roots`). Use it to trust a private CA.
    #[cfg(feature = "rustls")]
    #[cfg_attr(docsrs, doc(cfg(feature = "rustls")))]
    pub fn tls_config(mut self, config: rustls::ClientConfig) -> Self {
        self.tls = Some(Arc::new(config));
        self
    }

    /// Checks the settings and builds the client. No request is made.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] for the first refused setting, in this order:
    /// with discovery, `issuer` (not an absolute `http(s)` URL, with
    /// credentials, a query or a fragment; `http` to a host that is not
    /// loopback without [`allow_http`](Self::allow_http); `https` without
    /// the `rustls` feature) and `max_discovery_len` (zero);
    /// `url` (not an absolute `http` URL, or `https` with the `rustls`
    /// feature; or it holds credentials, which the error never repeats),
    /// `timeout` (zero), `max_response_len` (zero), `cache_ttl_bounds`
    /// (min above max), `max_stale` (zero), then any duration longer than
    /// 100 years (`timeout`, `cache_ttl_bounds`, `default_cache_ttl`,
    /// `refresh_cooldown`, `max_stale`), and `tls_config` (no TLS protocol
    /// version available).
    pub fn build(self) -> Result<RemoteJwks, ConfigError> {
        let discovery = self.discovery()?;
        let invalid_url = || {
            ConfigError::new(
                "url",
                masked_url(&self.url),
                "expected an absolute URL, http://host[:port]/path",
            )
        };
        let uri: Uri = self.url.parse().map_err(|_| invalid_url())?;
        match uri.scheme_str() {
            Some("http") => {}
            #[cfg(feature = "rustls")]
            Some("https") => {}
            Some(other) => {
                return Err(ConfigError::new(
                    "url",
                    masked_url(&self.url),
                    format!(
                        "unsupported scheme {:?}: http is supported, and https with the rustls \
                         feature",
                        truncate(other)
                    ),
                ));
            }
            None => return Err(invalid_url()),
        }
        if uri.authority().is_some_and(|a| a.as_str().contains('@')) {
            // The client never sends them, and the URL is logged.
            return Err(ConfigError::without_value(
                "url",
                "the URL holds credentials (user:password@): they are never sent, and the URL \
                 is logged; remove them",
            ));
        }
        if uri.host().is_none_or(str::is_empty) {
            return Err(invalid_url());
        }
        let mut config = self.config;
        if config.timeout.is_zero() {
            return Err(ConfigError::new(
                "timeout",
                config.timeout,
                "must be more than zero",
            ));
        }
        if config.max_len == 0 {
            return Err(ConfigError::new(
                "max_response_len",
                config.max_len,
                "must be at least 1 byte",
            ));
        }
        if config.min_ttl > config.max_ttl {
            return Err(ConfigError::new(
                "cache_ttl_bounds",
                (config.min_ttl, config.max_ttl),
                "the minimum cache lifetime is above the maximum",
            ));
        }
        if config.max_stale.is_zero() {
            return Err(ConfigError::new(
                "max_stale",
                config.max_stale,
                "must be more than zero: no fetched set could ever be used",
            ));
        }
        // Deadlines are `Instant + setting`: keep every setting far from
        // overflowing it.
        for (setting, value) in [
            ("timeout", config.timeout),
            ("cache_ttl_bounds", config.max_ttl),
            ("default_cache_ttl", config.default_ttl),
            ("refresh_cooldown", config.cooldown),
            ("max_stale", config.max_stale),
        ] {
            if value > MAX_SETTING {
                return Err(ConfigError::new(setting, value, "longer than 100 years"));
            }
        }
        config.default_ttl = config.default_ttl.clamp(config.min_ttl, config.max_ttl);
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(config.timeout));
        connector.set_nodelay(true);
        #[cfg(feature = "rustls")]
        let connector = {
            let tls = match self.tls {
                Some(tls) => Arc::unwrap_or_clone(tls),
                None => default_tls_config()?,
            };
            connector.enforce_http(false);
            hyper_rustls::HttpsConnectorBuilder::new()
                .with_tls_config(tls)
                .https_or_http()
                .enable_http1()
                .wrap_connector(connector)
        };
        let client = Client::builder(TokioExecutor::new()).build(connector);
        let now = Instant::now();
        Ok(RemoteJwks {
            inner: Arc::new(Remote {
                uri,
                discovery,
                client,
                config,
                cache: ArcSwap::from_pointee(Cache {
                    set: None,
                    source: None,
                    etag: None,
                    fresh_until: now,
                    usable_until: now,
                    last_error: None,
                }),
                control: Mutex::new(Control::default()),
            }),
        })
    }
}

impl RemoteJwksBuilder {
    /// The discovery settings, checked (`None` without an issuer).
    fn discovery(&self) -> Result<Option<Discovery>, ConfigError> {
        let Some(issuer) = &self.issuer else {
            return Ok(None);
        };
        let uri = issuer_uri(issuer)?;
        let loopback = is_loopback(&uri);
        match uri.scheme_str() {
            Some("http") if !loopback && !self.allow_http => {
                return Err(ConfigError::new(
                    "issuer",
                    issuer,
                    "plain http to a host that is not loopback: use https (feature rustls), or \
                     allow_http(true) on a network you trust end to end",
                ));
            }
            #[cfg(not(feature = "rustls"))]
            Some("https") => {
                return Err(ConfigError::new(
                    "issuer",
                    issuer,
                    "https needs the rustls feature",
                ));
            }
            _ => {}
        }
        if self.max_discovery_len == 0 {
            return Err(ConfigError::new(
                "max_discovery_len",
                self.max_discovery_len,
                "must be at least 1 byte",
            ));
        }
        Ok(Some(Discovery {
            issuer: issuer.clone(),
            allow_http: self.allow_http,
            loopback,
            max_len: self.max_discovery_len,
        }))
    }
}

/// rustls with aws-lc-rs, safe default protocol versions and Mozilla's
/// roots; independent of any process-wide default provider.
#[cfg(feature = "rustls")]
fn default_tls_config() -> Result<rustls::ClientConfig, ConfigError> {
    use hyper_rustls::ConfigBuilderExt as _;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|_| ConfigError::without_value("tls_config", "no TLS protocol version available"))?
        .with_webpki_roots()
        .with_no_client_auth())
}

/// The URL for an error message, with any `user:password@` part masked
/// (the error cuts it to 200 characters).
fn masked_url(url: &str) -> String {
    let start = url.find("://").map_or(0, |i| i + 3);
    let end = url[start..]
        .find(['/', '?', '#'])
        .map_or(url.len(), |i| start + i);
    match url[start..end].rfind('@') {
        Some(at) => format!("{}***@{}", &url[..start], &url[start + at + 1..]),
        None => url.to_owned(),
    }
}

/// Why a fetch of the remote JWK Set failed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum FetchError {
    /// No complete answer within the timeout, or its keys not checked by
    /// then.
    Timeout(Duration),
    /// Connecting or talking HTTP failed.
    Http(String),
    /// The server answered with a redirect, which is not followed.
    Redirect(u16),
    /// The server answered with a status other than 200.
    Status(u16),
    /// The body is larger than the limit.
    TooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// The body is not an acceptable JWK Set.
    InvalidSet(JwkSetError),
    /// The discovery document is refused (see
    /// [From an issuer URL](RemoteJwks#from-an-issuer-url)).
    Discovery(DiscoveryError),
    /// The fetch task ended without an answer (the runtime shut down).
    Aborted(String),
    /// No tokio runtime to run the fetch on.
    NoRuntime,
}

impl fmt::Display for FetchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FetchError::Timeout(limit) => write!(f, "no answer within {limit:?}"),
            FetchError::Http(err) => write!(f, "HTTP error: {err}"),
            FetchError::Redirect(status) => {
                write!(
                    f,
                    "the server redirected ({status}); redirects are not followed"
                )
            }
            FetchError::Status(status) => write!(f, "the server answered {status}, not 200"),
            FetchError::TooLarge { limit } => {
                write!(f, "the response is larger than {limit} bytes")
            }
            FetchError::InvalidSet(err) => err.fmt(f),
            FetchError::Discovery(err) => err.fmt(f),
            FetchError::Aborted(err) => write!(f, "the fetch was aborted: {err}"),
            FetchError::NoRuntime => f.write_str("no tokio runtime to fetch on"),
        }
    }
}

impl std::error::Error for FetchError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            FetchError::InvalidSet(err) => Some(err),
            FetchError::Discovery(err) => Some(err),
            _ => None,
        }
    }
}

/// Why a discovery document was refused
/// ([`FetchError::Discovery`]). Values copied from the document are cut to
/// 200 characters; credentials in a URL are masked.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DiscoveryError {
    /// Not a JSON object, a member repeated, or `issuer` or `jwks_uri`
    /// missing or not a string.
    Malformed(String),
    /// The document names another issuer than the configured one (RFC 8414
    /// §3.3): it may be another issuer's, and its `jwks_uri` is not used.
    IssuerMismatch {
        /// The configured issuer.
        expected: String,
        /// The document's.
        found: String,
    },
    /// `jwks_uri` is not an absolute `http(s)` URL (a relative one, another
    /// scheme, credentials, https without the `rustls` feature).
    InvalidJwksUri {
        /// The URL, credentials masked.
        uri: String,
        /// Why.
        reason: &'static str,
    },
    /// `jwks_uri` is plain `http` and not between loopback addresses, and
    /// [`allow_http`](RemoteJwksBuilder::allow_http) is off.
    InsecureJwksUri(String),
}

impl fmt::Display for DiscoveryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DiscoveryError::Malformed(why) => write!(f, "malformed discovery document: {why}"),
            DiscoveryError::IssuerMismatch { expected, found } => write!(
                f,
                "the discovery document names the issuer {found:?}, not {expected:?}"
            ),
            DiscoveryError::InvalidJwksUri { uri, reason } => {
                write!(
                    f,
                    "the discovery document's jwks_uri {uri:?} is refused: {reason}"
                )
            }
            DiscoveryError::InsecureJwksUri(uri) => write!(
                f,
                "the discovery document's jwks_uri {uri:?} is plain http off loopback: keys must \
                 come over https (or allow_http)"
            ),
        }
    }
}

impl std::error::Error for DiscoveryError {}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> Config {
        Config {
            timeout: DEFAULT_FETCH_TIMEOUT,
            max_len: DEFAULT_MAX_JWKS_LEN,
            min_ttl: DEFAULT_MIN_CACHE_TTL,
            max_ttl: DEFAULT_MAX_CACHE_TTL,
            default_ttl: DEFAULT_CACHE_TTL,
            cooldown: DEFAULT_REFRESH_COOLDOWN,
            max_stale: DEFAULT_MAX_STALE,
        }
    }

    fn ttl(values: &[&str]) -> Duration {
        let mut headers = HeaderMap::new();
        for value in values {
            headers.append(header::CACHE_CONTROL, value.parse().unwrap());
        }
        cache_ttl(&headers, &config())
    }

    #[test]
    fn retries_back_off_until_a_set_is_usable() {
        let cooldown = Duration::from_secs(30);
        let secs = |failures| retry_delay(cooldown, false, failures).as_secs();
        assert_eq!(
            [secs(1), secs(2), secs(3), secs(4), secs(5)],
            [1, 2, 4, 8, 16]
        );
        assert_eq!(secs(6), 30);
        assert_eq!(secs(u32::MAX), 30);
        // A usable set covers for the failure: no hurry.
        assert_eq!(retry_delay(cooldown, true, 1), cooldown);
    }

    #[test]
    fn cache_control_is_honoured_and_clamped() {
        assert_eq!(ttl(&[]), Duration::from_secs(300));
        assert_eq!(ttl(&["public, max-age=600"]), Duration::from_secs(600));
        assert_eq!(ttl(&["Max-Age=\"120\""]), Duration::from_secs(120));
        assert_eq!(ttl(&["max-age=1"]), Duration::from_secs(60));
        assert_eq!(ttl(&["max-age=999999999"]), Duration::from_secs(86_400));
        assert_eq!(ttl(&["no-store"]), Duration::from_secs(60));
        assert_eq!(ttl(&["max-age=abc"]), Duration::from_secs(300));
        assert_eq!(ttl(&["public", "max-age=900"]), Duration::from_secs(900));
    }

    #[test]
    fn builder_refuses_credentials_without_echoing_them() {
        for url in ["http://u:pw-123@h/jwks", "http://pw-123@h:80/jwks"] {
            let err = RemoteJwks::new(url).unwrap_err();
            assert_eq!(err.setting(), "url");
            assert_eq!(err.value(), None);
            assert!(!err.to_string().contains("pw-123"), "{err}");
        }
        // A URL that does not parse is echoed with its credentials masked.
        let err = RemoteJwks::new("http://u:pw-123@h:bad port/").unwrap_err();
        assert_eq!(err.value(), Some("\"http://***@h:bad port/\""));
        assert_eq!(masked_url("no scheme@host/x"), "***@host/x");
        assert_eq!(masked_url("http://h/a@b"), "http://h/a@b");
    }

    /// `max_stale(Duration::MAX)` used to panic in the fetch task (the verifier
    /// then answered 503 for good) and `refresh_cooldown(Duration::MAX)` in
    /// the request path on an unknown kid: `Instant + Duration::MAX`.
    #[test]
    fn builder_refuses_settings_that_overflow_deadlines() {
        let url = "http://127.0.0.1:1/jwks.json";
        let too_long = MAX_SETTING + Duration::from_secs(1);
        for (builder, setting) in [
            (
                RemoteJwks::builder(url).max_stale(Duration::ZERO),
                "max_stale",
            ),
            (
                RemoteJwks::builder(url).max_stale(Duration::MAX),
                "max_stale",
            ),
            (
                RemoteJwks::builder(url).refresh_cooldown(Duration::MAX),
                "refresh_cooldown",
            ),
            (
                RemoteJwks::builder(url).cache_ttl_bounds(Duration::ZERO, Duration::MAX),
                "cache_ttl_bounds",
            ),
            (
                RemoteJwks::builder(url).default_cache_ttl(too_long),
                "default_cache_ttl",
            ),
            (RemoteJwks::builder(url).timeout(too_long), "timeout"),
        ] {
            assert_eq!(builder.build().unwrap_err().setting(), setting);
        }
        assert!(
            RemoteJwks::builder(url)
                .max_stale(MAX_SETTING)
                .refresh_cooldown(MAX_SETTING)
                .cache_ttl_bounds(MAX_SETTING, MAX_SETTING)
                .timeout(MAX_SETTING)
                .build()
                .is_ok()
        );
    }

    #[test]
    fn builder_checks_url_and_settings() {
        assert!(RemoteJwks::new("http://127.0.0.1:1/jwks.json").is_ok());
        #[cfg(not(feature = "rustls"))]
        assert!(
            RemoteJwks::new("https://example.com/jwks.json")
                .unwrap_err()
                .reason()
                .contains("unsupported scheme \"https\"")
        );
        #[cfg(feature = "rustls")]
        assert!(RemoteJwks::new("https://example.com/jwks.json").is_ok());
        assert!(
            RemoteJwks::new("ftp://example.com/jwks.json")
                .unwrap_err()
                .reason()
                .contains("unsupported scheme")
        );
        for url in ["/jwks.json", "not a url"] {
            let err = RemoteJwks::new(url).unwrap_err();
            assert_eq!(err.setting(), "url");
            assert!(err.reason().contains("absolute URL"), "{err}");
        }
        let err = RemoteJwks::builder("http://h/")
            .timeout(Duration::ZERO)
            .build()
            .unwrap_err();
        assert_eq!(err.setting(), "timeout");
        let err = RemoteJwks::builder("http://h/")
            .cache_ttl_bounds(Duration::from_secs(10), Duration::from_secs(1))
            .build()
            .unwrap_err();
        assert_eq!(err.setting(), "cache_ttl_bounds");
    }
}
