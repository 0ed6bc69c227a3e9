//! The verification core: strict compact-JWS parsing, key selection,
//! signature and claim checks. Usable without the middleware.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use arc_swap::ArcSwapOption;
use futures_util::future::BoxFuture;
use http::StatusCode;
use serde::Deserialize;
use serde::de::{MapAccess, Visitor};
use serde_json::{Map, Value};

use super::claims::VerifiedClaims;
use super::jwk::{JwkSet, MAX_VERIFY_KID_LEN, SignatureError, VerifyingKey};
use super::remote::{Keys, RemoteJwks, SharedFetch};
use crate::b64;
use crate::clock::Clock;
use crate::error::ConfigError;
use crate::keys::Algorithm;
use crate::limits::DEFAULT_MAX_TOKEN_LEN;
use crate::number::numbers_keep_their_value;
use crate::registry::KeyRegistry;

/// Our verifier's default clock-skew leeway for `exp`, `nbf` and `iat`:
/// 30 s.
const DEFAULT_LEEWAY: Duration = Duration::from_secs(30);

/// The largest leeway a verifier accepts: one day.
const MAX_LEEWAY: Duration = Duration::from_secs(24 * 60 * 60);

/// Where a [`Verifier`] takes its public keys from.
///
/// * a [`KeyRegistry`] in the same process: the published keys (next,
///   active, retiring) of its current snapshot, parsed once per snapshot
///   version;
/// * a [`RemoteJwks`]: a JWK Set fetched over HTTP and cached;
/// * a fixed [`JwkSet`].
#[derive(Clone)]
pub struct KeySource {
    kind: SourceKind,
}

#[derive(Clone)]
enum SourceKind {
    Registry {
        registry: KeyRegistry,
        cache: Arc<ArcSwapOption<RegistryKeys>>,
    },
    Remote(RemoteJwks),
    Static(Arc<JwkSet>),
}

struct RegistryKeys {
    version: u64,
    set: Arc<JwkSet>,
}

impl KeySource {
    /// The keys of a registry in this process.
    pub fn registry(registry: KeyRegistry) -> Self {
        KeySource {
            kind: SourceKind::Registry {
                registry,
                cache: Arc::new(ArcSwapOption::empty()),
            },
        }
    }

    /// A remote JWK Set.
    pub fn remote(remote: RemoteJwks) -> Self {
        KeySource {
            kind: SourceKind::Remote(remote),
        }
    }

    /// A fixed set of keys.
    pub fn fixed(set: JwkSet) -> Self {
        KeySource {
            kind: SourceKind::Static(Arc::new(set)),
        }
    }

    /// The clock a verifier of these keys reads unless told another: the
    /// registry's, or the system's.
    fn default_clock(&self) -> Clock {
        match &self.kind {
            SourceKind::Registry { registry, .. } => registry.clock().clone(),
            _ => Clock::system(),
        }
    }

    /// The keys of the registry's current snapshot, built once per version.
    fn registry_set(registry: &KeyRegistry, cache: &ArcSwapOption<RegistryKeys>) -> Arc<JwkSet> {
        let snapshot = registry.current();
        if let Some(cached) = cache.load().as_ref()
            && cached.version == snapshot.version()
        {
            return Arc::clone(&cached.set);
        }
        let set = Arc::new(JwkSet::from_public_jwks(
            snapshot.keys().iter().map(|k| k.public_jwk()),
        ));
        cache.store(Some(Arc::new(RegistryKeys {
            version: snapshot.version(),
            set: Arc::clone(&set),
        })));
        set
    }
}

impl From<KeyRegistry> for KeySource {
    fn from(registry: KeyRegistry) -> Self {
        KeySource::registry(registry)
    }
}

impl From<RemoteJwks> for KeySource {
    fn from(remote: RemoteJwks) -> Self {
        KeySource::remote(remote)
    }
}

impl From<JwkSet> for KeySource {
    fn from(set: JwkSet) -> Self {
        KeySource::fixed(set)
    }
}

impl fmt::Debug for KeySource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            SourceKind::Registry { registry, .. } => f
                .debug_tuple("KeySource::Registry")
                .field(registry)
                .finish(),
            SourceKind::Remote(remote) => f.debug_tuple("KeySource::Remote").field(remote).finish(),
            SourceKind::Static(set) => f.debug_tuple("KeySource::Fixed").field(set).finish(),
        }
    }
}

/// Verifies compact JWS tokens against a [`KeySource`] and a set of claim
/// rules. See the [module docs](super).
///
/// Cloning is cheap; clones share the key cache.
///
/// [`new`](Self::new) gives the defaults: the ten [`Algorithm`]s allowed,
/// 30 s leeway, `exp` required, 8 KiB size limit, no `iss`/`aud`/`typ`
/// check. [`builder`](Self::builder) sets the rules. With a [`KeyRegistry`]
/// the registry's [`Clock`] is used, otherwise the system clock.
///
/// ```
/// use std::time::Duration;
/// use tower_jwt_signer::{Algorithm, KeyRegistry, Verifier};
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let registry = KeyRegistry::generate(Algorithm::ES256)?;
/// let verifier = Verifier::builder(registry.clone())
///     .issuer("https://gateway.example")
///     .audience("orders-api")
///     .leeway(Duration::from_secs(10))
///     .build()?;
/// # let _ = verifier;
///
/// // The same checks as the signer's: an empty issuer is refused.
/// let err = Verifier::builder(registry).issuer("").build().unwrap_err();
/// assert_eq!(err.setting(), "issuer");
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
#[must_use]
pub struct Verifier {
    keys: KeySource,
    rules: Arc<Rules>,
}

#[derive(Clone)]
struct Rules {
    algorithms: Vec<Algorithm>,
    leeway: Duration,
    issuer: Option<String>,
    audience: Option<String>,
    typ: Option<String>,
    required: Vec<String>,
    max_len: usize,
    clock: Clock,
}

impl Verifier {
    /// A verifier with the default rules.
    pub fn new(keys: impl Into<KeySource>) -> Self {
        // The builder's defaults, so the two can never drift apart; they
        // pass its checks (the unit tests build them).
        Verifier::builder(keys)
            .build()
            .expect("the default rules pass the builder's checks")
    }

    /// A builder for the rules: algorithms, leeway, issuer, audience,
    /// `typ`, required claims, size limit, clock.
    pub fn builder(keys: impl Into<KeySource>) -> VerifierBuilder {
        VerifierBuilder {
            keys: keys.into(),
            algorithms: Algorithm::ALL.to_vec(),
            leeway: DEFAULT_LEEWAY,
            issuer: None,
            audience: None,
            typ: None,
            required: vec!["exp".to_owned()],
            max_len: DEFAULT_MAX_TOKEN_LEN,
            clock: None,
        }
    }

    /// Where the keys come from.
    pub fn key_source(&self) -> &KeySource {
        &self.keys
    }

    /// Verifies a compact JWS and its claims.
    ///
    /// With a [`RemoteJwks`] this may wait for a fetch: the first one, or a
    /// refresh for an unknown `kid` (rate limited, shared by concurrent
    /// callers). With other sources it never waits.
    ///
    /// # Errors
    ///
    /// A [`VerifyError`] saying why the token was refused.
    pub async fn verify(&self, token: &str) -> Result<VerifiedClaims, VerifyError> {
        match self.begin(token) {
            Attempt::Done(result) => result,
            Attempt::Pending(future) => future.await,
        }
    }

    /// Verifies a compact JWS against the given keys, ignoring the key
    /// source. Never waits.
    ///
    /// # Errors
    ///
    /// A [`VerifyError`] saying why the token was refused.
    pub fn verify_with(&self, token: &str, keys: &JwkSet) -> Result<VerifiedClaims, VerifyError> {
        let parsed = self.parse(token)?;
        self.finish(&parsed, keys)
    }

    /// Starts a verification: done at once unless a remote fetch is needed.
    pub(crate) fn begin(&self, token: &str) -> Attempt {
        let parsed = match self.parse(token) {
            Ok(parsed) => parsed,
            Err(err) => return Attempt::Done(Err(err)),
        };
        match &self.keys.kind {
            SourceKind::Static(set) => Attempt::Done(self.settle(&parsed, set)),
            SourceKind::Registry { registry, cache } => {
                let set = KeySource::registry_set(registry, cache);
                Attempt::Done(self.settle(&parsed, &set))
            }
            SourceKind::Remote(remote) => match remote.keys_now() {
                Keys::Ready(set) => match self.finish(&parsed, &set) {
                    Err(VerifyError::UnknownKid) if parsed.kid_may_be_published() => {
                        match remote.refresh_for_unknown_kid() {
                            Some(fetch) => Attempt::Pending(self.after_fetch(fetch, token)),
                            None if set.is_empty() => Attempt::Done(Err(no_usable_key())),
                            None => Attempt::Done(Err(VerifyError::UnknownKid)),
                        }
                    }
                    result => Attempt::Done(result),
                },
                Keys::Wait(fetch) => Attempt::Pending(self.after_fetch(fetch, token)),
                Keys::Unavailable(reason) => {
                    Attempt::Done(Err(VerifyError::KeysUnavailable(reason.to_string())))
                }
            },
        }
    }

    /// Waits for a fetch, then verifies against whatever set is usable.
    fn after_fetch(
        &self,
        fetch: SharedFetch,
        token: &str,
    ) -> BoxFuture<'static, Result<VerifiedClaims, VerifyError>> {
        let this = self.clone();
        let token = token.to_owned();
        Box::pin(async move {
            let _ = fetch.await;
            let SourceKind::Remote(remote) = &this.keys.kind else {
                unreachable!("only remote sources fetch");
            };
            let parsed = this.parse(&token)?;
            match remote.usable_set() {
                Ok(set) => this.settle(&parsed, &set),
                Err(reason) => Err(VerifyError::KeysUnavailable(reason.to_string())),
            }
        })
    }

    /// Everything that does not need a key: size, shape, header.
    fn parse<'t>(&self, token: &'t str) -> Result<Parsed<'t>, VerifyError> {
        let rules = &*self.rules;
        if token.len() > rules.max_len {
            return Err(VerifyError::TooLarge {
                len: token.len(),
                max: rules.max_len,
            });
        }
        let mut parts = token.splitn(4, '.');
        let (Some(header_b64), Some(payload_b64), Some(signature_b64), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(VerifyError::Malformed(
                "the token is not three base64url parts separated by dots",
            ));
        };
        let header_bytes = b64::decode(header_b64)
            .map_err(|_| VerifyError::Malformed("the header is not strict base64url"))?;
        let header = parse_object(&header_bytes)
            .map_err(|_| VerifyError::Malformed("the header is not a JSON object"))?;
        if header.contains_key("crit") {
            return Err(VerifyError::CriticalHeader);
        }
        let alg = match header.get("alg") {
            Some(Value::String(name)) => name
                .parse::<Algorithm>()
                .map_err(|_| VerifyError::UnsupportedAlgorithm)?,
            Some(_) => return Err(VerifyError::Malformed("the header's alg is not a string")),
            None => return Err(VerifyError::Malformed("the header has no alg")),
        };
        if !rules.algorithms.contains(&alg) {
            return Err(VerifyError::AlgorithmNotAllowed(alg));
        }
        if let Some(expected) = &rules.typ {
            match header.get("typ") {
                Some(Value::String(typ)) if same_media_type(typ, expected) => {}
                _ => return Err(VerifyError::WrongType),
            }
        }
        let kid = match header.get("kid") {
            None => None,
            Some(Value::String(kid)) => Some(kid.clone()),
            Some(_) => return Err(VerifyError::Malformed("the header's kid is not a string")),
        };
        if signature_b64.is_empty() {
            return Err(VerifyError::Malformed("the signature is missing"));
        }
        let signature = b64::decode(signature_b64)
            .map_err(|_| VerifyError::Malformed("the signature is not strict base64url"))?;
        let signing_input = &token[..header_b64.len() + 1 + payload_b64.len()];
        Ok(Parsed {
            alg,
            kid,
            signing_input,
            payload_b64,
            signature,
        })
    }

    /// Verifies a compact JWS (size, header, key selection, signature)
    /// against the given keys without reading its payload as JWT claims,
    /// and returns the payload. For JWS whose payload is not a claims set;
    /// never waits.
    ///
    /// # Errors
    ///
    /// A [`VerifyError`] saying why the JWS was refused.
    pub fn verify_jws_with(&self, token: &str, keys: &JwkSet) -> Result<Vec<u8>, VerifyError> {
        let parsed = self.parse(token)?;
        self.check_signature(&parsed, keys)
    }

    /// Key selection and signature; returns the decoded payload.
    fn check_signature(&self, parsed: &Parsed<'_>, keys: &JwkSet) -> Result<Vec<u8>, VerifyError> {
        let key = select(keys, parsed.kid.as_deref())?;
        match key.verify(
            parsed.alg,
            parsed.signing_input.as_bytes(),
            &parsed.signature,
        ) {
            Ok(()) => {}
            Err(SignatureError::KeyMismatch) => return Err(VerifyError::KeyMismatch),
            Err(SignatureError::Malformed | SignatureError::Invalid) => {
                return Err(VerifyError::InvalidSignature);
            }
        }
        b64::decode(parsed.payload_b64)
            .map_err(|_| VerifyError::Malformed("the payload is not strict base64url"))
    }

    /// [`finish`](Self::finish) for a key source: an empty set means no
    /// keys are available (503), not a bad token.
    fn settle(&self, parsed: &Parsed<'_>, keys: &JwkSet) -> Result<VerifiedClaims, VerifyError> {
        if keys.is_empty() {
            return Err(no_usable_key());
        }
        self.finish(parsed, keys)
    }

    /// Key selection, signature, claims.
    fn finish(&self, parsed: &Parsed<'_>, keys: &JwkSet) -> Result<VerifiedClaims, VerifyError> {
        let payload = self.check_signature(parsed, keys)?;
        let claims = parse_object(&payload)
            .map_err(|_| VerifyError::Malformed("the payload is not a JSON object"))?;
        if !numbers_keep_their_value(&payload) {
            return Err(VerifyError::InexactNumber);
        }
        self.check_claims(&claims)?;
        Ok(VerifiedClaims::new(claims, parsed.kid.clone(), parsed.alg))
    }

    fn check_claims(&self, claims: &Map<String, Value>) -> Result<(), VerifyError> {
        let rules = &*self.rules;
        for name in &rules.required {
            if !claims.contains_key(name) {
                return Err(VerifyError::MissingClaim(name.clone()));
            }
        }
        let now = rules
            .clock
            .now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or(Duration::ZERO)
            .as_secs_f64();
        let leeway = rules.leeway.as_secs_f64();
        let date = |name: &'static str| match claims.get(name) {
            None => Ok(None),
            Some(Value::Number(n)) => n.as_f64().map(Some).ok_or(VerifyError::InvalidClaim(name)),
            Some(_) => Err(VerifyError::InvalidClaim(name)),
        };
        if let Some(exp) = date("exp")?
            && now >= exp + leeway
        {
            return Err(VerifyError::Expired);
        }
        if let Some(nbf) = date("nbf")?
            && now + leeway < nbf
        {
            return Err(VerifyError::NotYetValid);
        }
        // RFC 7519 makes `iat` informational; a token issued later than
        // now (beyond the clock skew) or before 1970 was not made by a
        // working issuer, so it is refused, as PyJWT, jose4j and others do.
        if let Some(iat) = date("iat")? {
            if iat < 0.0 {
                return Err(VerifyError::InvalidClaim("iat"));
            }
            if now + leeway < iat {
                return Err(VerifyError::IssuedInFuture);
            }
        }
        if let Some(issuer) = &rules.issuer {
            match claims.get("iss") {
                None => return Err(VerifyError::MissingClaim("iss".to_owned())),
                Some(Value::String(iss)) if iss == issuer => {}
                Some(_) => return Err(VerifyError::WrongIssuer),
            }
        }
        if let Some(audience) = &rules.audience {
            let ok = match claims.get("aud") {
                None => return Err(VerifyError::MissingClaim("aud".to_owned())),
                Some(Value::String(aud)) => aud == audience,
                Some(Value::Array(list)) => list.iter().any(|a| a.as_str() == Some(audience)),
                Some(_) => false,
            };
            if !ok {
                return Err(VerifyError::WrongAudience);
            }
        }
        Ok(())
    }
}

impl fmt::Debug for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let rules = &*self.rules;
        f.debug_struct("Verifier")
            .field("keys", &self.keys)
            .field("algorithms", &rules.algorithms)
            .field("leeway", &rules.leeway)
            .field("issuer", &rules.issuer)
            .field("audience", &rules.audience)
            .field("typ", &rules.typ)
            .field("required", &rules.required)
            .field("max_len", &rules.max_len)
            .field("clock", &rules.clock)
            .finish()
    }
}

/// Builds a [`Verifier`]; see [`Verifier::builder`].
///
/// The setters only record their value; [`build`](Self::build) checks
/// them, with the same rules the signer's builder applies to the same
/// claims.
#[must_use]
#[derive(Debug, Clone)]
pub struct VerifierBuilder {
    keys: KeySource,
    algorithms: Vec<Algorithm>,
    leeway: Duration,
    issuer: Option<String>,
    audience: Option<String>,
    typ: Option<String>,
    required: Vec<String>,
    max_len: usize,
    clock: Option<Clock>,
}

impl VerifierBuilder {
    /// Accepts only these algorithms (default: all ten; not none). A
    /// token's `alg` must be on this list *and* fit the key its `kid`
    /// selects.
    pub fn algorithms(mut self, algorithms: impl IntoIterator<Item = Algorithm>) -> Self {
        self.algorithms = algorithms.into_iter().collect();
        self
    }

    /// The clock-skew allowance for `exp`, `nbf` and `iat` (default 30 s;
    /// zero is allowed, at most one day). Whole and fractional seconds are
    /// honoured.
    pub fn leeway(mut self, leeway: Duration) -> Self {
        self.leeway = leeway;
        self
    }

    /// Requires `iss` to be exactly this string (not empty).
    pub fn issuer(mut self, issuer: impl Into<String>) -> Self {
        self.issuer = Some(issuer.into());
        self
    }

    /// Requires `aud` to be this string, or an array that contains it (not
    /// empty).
    pub fn audience(mut self, audience: impl Into<String>) -> Self {
        self.audience = Some(audience.into());
        self
    }

    /// Requires the header's `typ` to be this media type (not empty;
    /// compared without case, with or without the `application/` prefix,
    /// RFC 7515 section 4.1.9).
    pub fn typ(mut self, typ: impl Into<String>) -> Self {
        self.typ = Some(typ.into());
        self
    }

    /// The claims every token must carry (default: `exp`). This replaces
    /// the list: pass `exp` again to keep it required. No name may be
    /// empty.
    pub fn required_claims<I, T>(mut self, names: I) -> Self
    where
        I: IntoIterator<Item = T>,
        T: Into<String>,
    {
        self.required = names.into_iter().map(Into::into).collect();
        self
    }

    /// The size limit of a token in bytes (default 8 KiB; at least 1). A
    /// longer token is refused before any parsing.
    pub fn max_token_len(mut self, max: usize) -> Self {
        self.max_len = max;
        self
    }

    /// The clock for `exp`, `nbf` and `iat` (default: the registry's for a
    /// [`KeyRegistry`] source, else the system's; [`Clock::tokio`] follows
    /// paused time in tests).
    pub fn clock(mut self, clock: Clock) -> Self {
        self.clock = Some(clock);
        self
    }

    /// Checks the rules and builds the verifier.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] for the first refused setting, in this order:
    /// `algorithms` (an empty list: no token could ever verify), `leeway`
    /// (over one day), `issuer`, `audience`, `typ` (empty), `required_claims`
    /// (an empty name), `max_token_len` (zero).
    pub fn build(self) -> Result<Verifier, ConfigError> {
        let VerifierBuilder {
            keys,
            mut algorithms,
            leeway,
            issuer,
            audience,
            typ,
            required,
            max_len,
            clock,
        } = self;
        algorithms.sort();
        algorithms.dedup();
        if algorithms.is_empty() {
            return Err(ConfigError::new(
                "algorithms",
                algorithms,
                "the list is empty: no token could ever verify",
            ));
        }
        if leeway > MAX_LEEWAY {
            return Err(ConfigError::new(
                "leeway",
                leeway,
                "use at most one day (86400 s)",
            ));
        }
        for (setting, value) in [("issuer", &issuer), ("audience", &audience), ("typ", &typ)] {
            if value.as_deref() == Some("") {
                return Err(ConfigError::new(
                    setting,
                    "",
                    "cannot be empty: no token carries an empty one",
                ));
            }
        }
        if required.iter().any(String::is_empty) {
            return Err(ConfigError::new(
                "required_claims",
                &required,
                "a claim name cannot be empty",
            ));
        }
        if max_len == 0 {
            return Err(ConfigError::new(
                "max_token_len",
                max_len,
                "use at least 1 byte",
            ));
        }
        let clock = clock.unwrap_or_else(|| keys.default_clock());
        Ok(Verifier {
            keys,
            rules: Arc::new(Rules {
                algorithms,
                leeway,
                issuer,
                audience,
                typ,
                required,
                max_len,
                clock,
            }),
        })
    }
}

/// The outcome of [`Verifier::begin`].
pub(crate) enum Attempt {
    Done(Result<VerifiedClaims, VerifyError>),
    Pending(BoxFuture<'static, Result<VerifiedClaims, VerifyError>>),
}

struct Parsed<'t> {
    alg: Algorithm,
    kid: Option<String>,
    signing_input: &'t str,
    payload_b64: &'t str,
    signature: Vec<u8>,
}

impl Parsed<'_> {
    /// Whether a refresh could make the kid known (a kid longer than any
    /// accepted one never can).
    fn kid_may_be_published(&self) -> bool {
        self.kid
            .as_ref()
            .is_none_or(|kid| !kid.is_empty() && kid.len() <= MAX_VERIFY_KID_LEN)
    }
}

fn no_usable_key() -> VerifyError {
    VerifyError::KeysUnavailable("the key set holds no usable key".to_owned())
}

fn select<'s>(keys: &'s JwkSet, kid: Option<&str>) -> Result<&'s VerifyingKey, VerifyError> {
    match kid {
        Some(kid) => keys
            .get(kid)
            .map(|key| &**key)
            .ok_or(VerifyError::UnknownKid),
        None => match keys.keys() {
            [only] => Ok(only),
            [] => Err(VerifyError::UnknownKid),
            _ => Err(VerifyError::KidRequired),
        },
    }
}

/// Compares two media types the way RFC 7515 section 4.1.9 asks: without
/// case, `application/` optional.
fn same_media_type(a: &str, b: &str) -> bool {
    fn short(t: &str) -> &str {
        match t.get(..12) {
            Some(prefix) if prefix.eq_ignore_ascii_case("application/") => &t[12..],
            _ => t,
        }
    }
    short(a).eq_ignore_ascii_case(short(b))
}

/// Parses a JSON object, refusing duplicate member names (RFC 7515 section
/// 5.2 and RFC 7519 section 4: two parsers must never see different values
/// for the same claim).
fn parse_object(bytes: &[u8]) -> Result<Map<String, Value>, serde_json::Error> {
    struct Unique(Map<String, Value>);

    impl<'de> Deserialize<'de> for Unique {
        fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
            struct ObjectVisitor;
            impl<'de> Visitor<'de> for ObjectVisitor {
                type Value = Unique;
                fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                    f.write_str("a JSON object")
                }
                fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Unique, A::Error> {
                    let mut map = Map::new();
                    while let Some(name) = access.next_key::<String>()? {
                        let value: Value = access.next_value()?;
                        if map.insert(name, value).is_some() {
                            return Err(serde::de::Error::custom("duplicate member name"));
                        }
                    }
                    Ok(Unique(map))
                }
            }
            deserializer.deserialize_map(ObjectVisitor)
        }
    }

    serde_json::from_slice::<Unique>(bytes).map(|u| u.0)
}

/// Why a token (or the request that carried it) was refused.
///
/// [`status`](Self::status) maps each reason to the HTTP answer of
/// [`JwtVerifier`](super::JwtVerifier): 401 for a missing or bad token, 400
/// for a malformed request, 503 while no keys are available. Neither the
/// `Display` text nor [`description`](Self::description) ever contains
/// token contents.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum VerifyError {
    /// The request carries no token where one was expected.
    MissingToken,
    /// The request is malformed (for example, two `Authorization` headers).
    InvalidRequest(&'static str),
    /// The token is longer than the size limit.
    TooLarge {
        /// Its length in bytes.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The token is not a well-formed compact JWS.
    Malformed(&'static str),
    /// The `alg` is `none`, symmetric (HS*), or unknown.
    UnsupportedAlgorithm,
    /// The `alg` is supported but not on this verifier's allowlist.
    AlgorithmNotAllowed(Algorithm),
    /// The header has `crit`: no extension is understood.
    CriticalHeader,
    /// The header's `typ` is missing or not the configured one.
    WrongType,
    /// The token has no `kid` and the key set has several keys.
    KidRequired,
    /// No key has the token's `kid` (or the set is empty).
    UnknownKid,
    /// The `alg` does not fit the selected key (type, curve, or the key's
    /// own `alg`).
    KeyMismatch,
    /// The signature does not verify (including wrong lengths and
    /// out-of-range ECDSA values).
    InvalidSignature,
    /// `exp` is past, beyond the leeway.
    Expired,
    /// `nbf` is in the future, beyond the leeway.
    NotYetValid,
    /// A number in the claims would not keep its value: an integer beyond
    /// 64 bits, or a decimal with more digits than an `f64` holds. Two such
    /// numbers could become the same claim; send them as strings.
    InexactNumber,
    /// `iat` is in the future, beyond the leeway: the token claims to be
    /// issued later than now.
    IssuedInFuture,
    /// `iss` is not the configured issuer.
    WrongIssuer,
    /// `aud` does not contain the configured audience.
    WrongAudience,
    /// A required claim is absent.
    MissingClaim(String),
    /// A registered claim has the wrong type (`exp`, `nbf`, `iat` must be
    /// numbers) or value (`iat` must not be negative).
    InvalidClaim(&'static str),
    /// No keys are available (the remote JWK Set has never been fetched,
    /// the last good one is too old, or the key source holds no usable
    /// key); the reason says why.
    KeysUnavailable(String),
}

impl VerifyError {
    /// The HTTP status [`JwtVerifier`](super::JwtVerifier) answers with.
    pub fn status(&self) -> StatusCode {
        match self {
            VerifyError::InvalidRequest(_) => StatusCode::BAD_REQUEST,
            VerifyError::KeysUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::UNAUTHORIZED,
        }
    }

    /// The variant, in snake case: the `reason` label of the
    /// `tjs_verifier_refusals_total` metric.
    pub(crate) fn metric_reason(&self) -> &'static str {
        match self {
            VerifyError::MissingToken => "missing_token",
            VerifyError::InvalidRequest(_) => "invalid_request",
            VerifyError::TooLarge { .. } => "too_large",
            VerifyError::Malformed(_) => "malformed",
            VerifyError::UnsupportedAlgorithm => "unsupported_algorithm",
            VerifyError::AlgorithmNotAllowed(_) => "algorithm_not_allowed",
            VerifyError::CriticalHeader => "critical_header",
            VerifyError::WrongType => "wrong_type",
            VerifyError::KidRequired => "kid_required",
            VerifyError::UnknownKid => "unknown_kid",
            VerifyError::KeyMismatch => "key_mismatch",
            VerifyError::InvalidSignature => "invalid_signature",
            VerifyError::Expired => "expired",
            VerifyError::NotYetValid => "not_yet_valid",
            VerifyError::InexactNumber => "inexact_number",
            VerifyError::IssuedInFuture => "issued_in_future",
            VerifyError::WrongIssuer => "wrong_issuer",
            VerifyError::WrongAudience => "wrong_audience",
            VerifyError::MissingClaim(_) => "missing_claim",
            VerifyError::InvalidClaim(_) => "invalid_claim",
            VerifyError::KeysUnavailable(_) => "keys_unavailable",
        }
    }

    /// The RFC 6750 error code: `invalid_token`, `invalid_request`, or none
    /// (a request without a token, or keys unavailable).
    pub fn error_code(&self) -> Option<&'static str> {
        match self {
            VerifyError::MissingToken | VerifyError::KeysUnavailable(_) => None,
            VerifyError::InvalidRequest(_) => Some("invalid_request"),
            _ => Some("invalid_token"),
        }
    }

    /// A short description that is safe to send to the caller: it never
    /// contains token contents, quotes, backslashes or control characters.
    pub fn description(&self) -> String {
        let text = self.to_string();
        text.chars()
            .filter(|c| (' '..='~').contains(c) && *c != '"' && *c != '\\')
            .collect()
    }
}

impl fmt::Display for VerifyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VerifyError::MissingToken => f.write_str("no bearer token"),
            VerifyError::InvalidRequest(reason) => write!(f, "malformed request: {reason}"),
            VerifyError::TooLarge { len, max } => {
                write!(f, "the token is {len} bytes long, the limit is {max}")
            }
            VerifyError::Malformed(reason) => write!(f, "malformed token: {reason}"),
            VerifyError::UnsupportedAlgorithm => {
                f.write_str("the token's alg is none, symmetric or unknown")
            }
            VerifyError::AlgorithmNotAllowed(alg) => {
                write!(f, "the algorithm {alg} is not allowed")
            }
            VerifyError::CriticalHeader => f.write_str("the token has a crit header"),
            VerifyError::WrongType => f.write_str("the token's typ is not the expected one"),
            VerifyError::KidRequired => f.write_str("the token has no kid"),
            VerifyError::UnknownKid => f.write_str("no key matches the token's kid"),
            VerifyError::KeyMismatch => {
                f.write_str("the token's alg does not fit the key its kid names")
            }
            VerifyError::InvalidSignature => f.write_str("the signature is invalid"),
            VerifyError::Expired => f.write_str("the token has expired"),
            VerifyError::NotYetValid => f.write_str("the token is not valid yet"),
            VerifyError::IssuedInFuture => f.write_str("the token is issued in the future"),
            VerifyError::InexactNumber => {
                f.write_str("a number in the claims cannot be read without rounding it")
            }
            VerifyError::WrongIssuer => f.write_str("the token's issuer is not accepted"),
            VerifyError::WrongAudience => f.write_str("the token is not meant for this audience"),
            VerifyError::MissingClaim(name) => write!(f, "the claim {name} is missing"),
            VerifyError::InvalidClaim(name) => {
                write!(
                    f,
                    "the claim {name} is not a valid date (a number of seconds)"
                )
            }
            VerifyError::KeysUnavailable(reason) => {
                write!(f, "no verification keys available: {reason}")
            }
        }
    }
}

impl std::error::Error for VerifyError {}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SigningKey;
    use serde_json::json;

    fn compact(key: &SigningKey, header: &Value, claims: &Value) -> String {
        let mut input = b64::encode(serde_json::to_vec(header).unwrap());
        input.push('.');
        input.push_str(&b64::encode(serde_json::to_vec(claims).unwrap()));
        let signature = key.sign(input.as_bytes()).unwrap();
        format!("{input}.{}", b64::encode(signature))
    }

    fn header(key: &SigningKey) -> Value {
        json!({"alg": key.algorithm().as_str(), "typ": "JWT", "kid": key.kid().as_str()})
    }

    fn setup() -> (SigningKey, Verifier) {
        let key = SigningKey::generate(Algorithm::ES256).unwrap();
        let verifier = Verifier::new(KeyRegistry::new(key.clone()));
        (key, verifier)
    }

    fn far() -> u64 {
        crate::clock::unix_seconds(std::time::SystemTime::now()) + 600
    }

    #[test]
    fn accepts_a_good_token_and_exposes_its_claims() {
        let (key, verifier) = setup();
        let token = compact(&key, &header(&key), &json!({"sub": "alice", "exp": far()}));
        let keys = JwkSet::from_public_jwks([key.public_jwk()]);
        let claims = verifier.verify_with(&token, &keys).unwrap();
        assert_eq!(claims.subject(), Some("alice"));
        assert_eq!(claims.kid(), Some(key.kid().as_str()));
        assert_eq!(claims.alg(), Algorithm::ES256);
    }

    #[test]
    fn duplicate_members_are_refused() {
        assert!(parse_object(br#"{"a":1,"a":2}"#).is_err());
        assert!(parse_object(br#"{"a":1,"b":{"c":1}}"#).is_ok());
        assert!(parse_object(b"[1]").is_err());
        assert!(parse_object(b"{} x").is_err());
    }

    #[test]
    fn media_types_compare_like_rfc_7515() {
        assert!(same_media_type("JWT", "jwt"));
        assert!(same_media_type("application/JWT", "jwt"));
        assert!(same_media_type("at+jwt", "application/at+JWT"));
        assert!(!same_media_type("JOSE", "JWT"));
        assert!(!same_media_type("é", "JWT"));
    }

    #[test]
    fn description_is_a_safe_quoted_string_body() {
        let err = VerifyError::MissingClaim("a\"b\\c\r\nd".to_owned());
        let text = err.description();
        assert!(!text.contains(['"', '\\', '\r', '\n']), "{text}");
    }

    #[test]
    fn claims_rules() {
        let key = SigningKey::generate(Algorithm::EdDSA).unwrap();
        let keys = JwkSet::from_public_jwks([key.public_jwk()]);
        let now = crate::clock::unix_seconds(std::time::SystemTime::now());
        let verifier = Verifier::builder(KeySource::fixed(keys.clone()))
            .issuer("gw")
            .audience("api")
            .leeway(Duration::ZERO)
            .build()
            .unwrap();
        let check = |claims: Value| {
            let token = compact(&key, &header(&key), &claims);
            verifier.verify_with(&token, &keys)
        };
        let exp = now + 60;
        assert!(check(json!({"iss": "gw", "aud": "api", "exp": exp})).is_ok());
        assert!(check(json!({"iss": "gw", "aud": ["x", "api"], "exp": exp})).is_ok());
        assert_eq!(
            check(json!({"iss": "gw", "aud": ["x"], "exp": exp})),
            Err(VerifyError::WrongAudience)
        );
        assert_eq!(
            check(json!({"iss": "other", "aud": "api", "exp": exp})),
            Err(VerifyError::WrongIssuer)
        );
        assert_eq!(
            check(json!({"aud": "api", "exp": exp})),
            Err(VerifyError::MissingClaim("iss".into()))
        );
        assert_eq!(
            check(json!({"iss": "gw", "aud": "api"})),
            Err(VerifyError::MissingClaim("exp".into()))
        );
        assert_eq!(
            check(json!({"iss": "gw", "aud": "api", "exp": now - 1})),
            Err(VerifyError::Expired)
        );
        assert_eq!(
            check(json!({"iss": "gw", "aud": "api", "exp": exp, "nbf": now + 30})),
            Err(VerifyError::NotYetValid)
        );
        assert_eq!(
            check(json!({"iss": "gw", "aud": "api", "exp": exp.to_string()})),
            Err(VerifyError::InvalidClaim("exp"))
        );
        // With the default leeway, a token expired 10 s ago still passes.
        let lenient = Verifier::new(KeySource::fixed(keys.clone()));
        let token = compact(&key, &header(&key), &json!({"exp": now - 10}));
        assert!(lenient.verify_with(&token, &keys).is_ok());
    }

    /// Issue 16: an `iat` far in the future (or negative) used to pass.
    #[test]
    fn iat_later_than_now_plus_the_leeway_or_negative_is_refused() {
        let key = SigningKey::generate(Algorithm::EdDSA).unwrap();
        let keys = JwkSet::from_public_jwks([key.public_jwk()]);
        let now = crate::clock::unix_seconds(std::time::SystemTime::now());
        let exp = now + 60;
        let verifier = Verifier::builder(KeySource::fixed(keys.clone()))
            .issuer("gw")
            .audience("api")
            .leeway(Duration::ZERO)
            .build()
            .unwrap();
        let check = |claims: Value| {
            let token = compact(&key, &header(&key), &claims);
            verifier.verify_with(&token, &keys)
        };
        // Later than now plus the leeway (zero here), negative, or not
        // a number.
        assert_eq!(
            check(json!({"iss": "gw", "aud": "api", "exp": exp, "iat": now + 5})),
            Err(VerifyError::IssuedInFuture)
        );
        assert_eq!(
            check(json!({"iss": "gw", "aud": "api", "exp": exp, "iat": 9_999_999_999u64})),
            Err(VerifyError::IssuedInFuture)
        );
        for iat in [
            json!(-1),
            json!(-1e300),
            json!(i64::MIN),
            json!("0"),
            json!(null),
        ] {
            assert_eq!(
                check(json!({"iss": "gw", "aud": "api", "exp": exp, "iat": iat})),
                Err(VerifyError::InvalidClaim("iat")),
                "{iat}"
            );
        }
        assert!(check(json!({"iss": "gw", "aud": "api", "exp": exp, "iat": now})).is_ok());
        assert!(check(json!({"iss": "gw", "aud": "api", "exp": exp, "iat": 0})).is_ok());
        let lenient = Verifier::new(KeySource::fixed(keys.clone()));
        // With the default 30 s leeway: issued 20 s ahead of this clock, but not 40 s.
        let token = compact(&key, &header(&key), &json!({"exp": exp, "iat": now + 20}));
        assert!(lenient.verify_with(&token, &keys).is_ok());
        let token = compact(&key, &header(&key), &json!({"exp": exp, "iat": now + 40}));
        assert_eq!(
            lenient.verify_with(&token, &keys),
            Err(VerifyError::IssuedInFuture)
        );
    }

    /// A token whose payload is `payload`, byte for byte.
    fn compact_raw(key: &SigningKey, payload: &str) -> String {
        let mut input = b64::encode(serde_json::to_vec(&header(key)).unwrap());
        input.push('.');
        input.push_str(&b64::encode(payload));
        let signature = key.sign(input.as_bytes()).unwrap();
        format!("{input}.{}", b64::encode(signature))
    }

    /// Issue 16: numbers beyond 64 bits were read as an f64, so
    /// 444444444444444444444444 and 444444444444444444444445 (as the
    /// signer's `${number:...}` writes them) became the same claim.
    #[test]
    fn numbers_that_would_not_keep_their_value_are_refused() {
        let key = SigningKey::generate(Algorithm::ES256).unwrap();
        let keys = JwkSet::from_public_jwks([key.public_jwk()]);
        let verifier = Verifier::new(KeySource::fixed(keys.clone()));
        let exp = far();
        let check = |number: &str| {
            let payload = format!(r#"{{"exp":{exp},"n":{number},"s":"{number}"}}"#);
            verifier.verify_with(&compact_raw(&key, &payload), &keys)
        };
        for inexact in [
            "444444444444444444444444",
            "444444444444444444444445",
            "18446744073709551616",
            "-9223372036854775809",
            "9007199254740993.0",
            "0.1000000000000000055511151231257827",
            "1.00000000000000000001",
            "1e-400",
            "123456789012345678901234567890e-10",
        ] {
            assert_eq!(check(inexact), Err(VerifyError::InexactNumber), "{inexact}");
        }
        // Digits in strings, escaped quotes and backslashes included, are
        // text, not numbers.
        let strings = format!(r#"{{"exp":{exp},"s":"\"444444444444444444444444\\","t":"1e999"}}"#);
        assert!(
            verifier
                .verify_with(&compact_raw(&key, &strings), &keys)
                .is_ok()
        );
        // Anywhere in the claims, not only at the top.
        let nested = format!(r#"{{"exp":{exp},"a":[1,{{"b":[444444444444444444444444]}}]}}"#);
        assert_eq!(
            verifier.verify_with(&compact_raw(&key, &nested), &keys),
            Err(VerifyError::InexactNumber)
        );
        for exact in [
            "0",
            "-0",
            "18446744073709551615",
            "-9223372036854775808",
            "9007199254740993",
            "0.1",
            "1.0",
            "1.50",
            "1E-3",
            "2e+10",
            "1.5e300",
            "0.30000000000000004",
            "1700000017.5716593",
            "-1.490143767845386e+129",
            "5e-324",
        ] {
            let claims = check(exact).unwrap_or_else(|err| panic!("{exact}: {err}"));
            let direct: Value = serde_json::from_str(exact).unwrap();
            assert_eq!(claims.get("n"), Some(&direct), "{exact}");
            assert_eq!(claims.get("s"), Some(&Value::from(exact)));
        }
    }

    /// Every f64 that serde_json writes (the shortest form that reads back
    /// as the same f64) passes: with `float_roundtrip` serde_json reads it
    /// back exactly. Without that feature about 1 in 8 fractional
    /// timestamps like 1700000017.5716593 read back one bit off.
    #[test]
    fn every_f64_serde_json_writes_is_accepted() {
        let key = SigningKey::generate(Algorithm::EdDSA).unwrap();
        let keys = JwkSet::from_public_jwks([key.public_jwk()]);
        let verifier = Verifier::new(KeySource::fixed(keys.clone()));
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut values = Vec::new();
        while values.len() < 400 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let random = f64::from_bits(state);
            if random.is_finite() {
                values.push(random);
            }
            #[allow(clippy::cast_precision_loss)]
            values.push(1.7e9 + (state % 1_000_000_000) as f64 / 1e7);
        }
        for chunk in values.chunks(40) {
            let claims = json!({"exp": far(), "values": chunk});
            let token = compact(&key, &header(&key), &claims);
            let verified = verifier.verify_with(&token, &keys).unwrap();
            assert_eq!(verified.get("values"), Some(&json!(chunk)));
        }
    }
}
