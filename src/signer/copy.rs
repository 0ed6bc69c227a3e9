//! [`CopyClaims`]: a gateway's per-request claims, copied from the token it
//! verified (the re-signing strategy of the
//! [module docs](super#strategies-pass-through-and-re-signing)).

use std::collections::HashSet;
use std::sync::Arc;

use http::request::Parts;
use serde_json::Value;

use super::claims::{COMPUTED_CLAIMS, ClaimsRejection, RequestClaims};
use crate::error::ConfigError;
use crate::verifier::VerifiedClaims;

/// Copies chosen claims, by name or renamed, from the [`VerifiedClaims`] an
/// earlier [`JwtVerifierLayer`](crate::JwtVerifierLayer) put in the request
/// into the claims of the token the signer makes: the claims closure of a
/// gateway that verifies an identity provider's token and forwards one of
/// its own (Otoroshi's `Sign`/`Transform` strategies). See the
/// [module docs](super#strategies-pass-through-and-re-signing) for the
/// whole recipe.
///
/// Only the claims named here are copied; every other claim of the
/// provider's token (its `iss`, `aud`, `exp`, `jti`, ...) stays behind. A
/// claim the verified token lacks is left out: require it on the provider's
/// verifier ([`VerifierBuilder::required_claims`](crate::verifier::VerifierBuilder::required_claims))
/// to refuse such tokens with 401 there. `sub` and `iss` are copied only from a
/// string and `aud` from a string or an array of strings; another form answers
/// 401 `unauthorized` (the token is not one this gateway can re-sign). A
/// request without verified claims (no verifier runs in front of the
/// signer) is answered 500 `claims_failed`: nothing is signed for a caller
/// nobody verified.
///
/// The copied claims take precedence over the signer's templates and
/// static claims of the same name (they are per-request claims): copying
/// to `iss` or `aud` replaces the gateway's own.
///
/// ```
/// use serde_json::json;
/// use tower_jwt_signer::signer::CopyClaims;
/// use tower_jwt_signer::{Algorithm, JwtSignerLayer, KeyRegistry};
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let copy = CopyClaims::builder()
///     .claim("sub")
///     .claim("scope")
///     .rename("email", "user_email")
///     .build()?;
/// let signer = JwtSignerLayer::builder(KeyRegistry::generate(Algorithm::ES256)?)
///     .issuer("https://gateway.example")
///     .audience("orders-api")
///     .request_claims(move |parts| copy.claims_for(parts))
///     .build()?;
/// # let _ = signer;
///
/// // `exp`, `iat`, `nbf` and `jti` are the signer's own.
/// let err = CopyClaims::builder().rename("exp", "exp").build().unwrap_err();
/// assert_eq!(err.setting(), "rename");
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct CopyClaims {
    rules: Arc<[Rule]>,
}

#[derive(Debug, Clone)]
struct Rule {
    /// The setter that took it, for a [`ConfigError`].
    setting: &'static str,
    from: String,
    to: String,
}

impl CopyClaims {
    /// A builder: no claim is copied until named.
    pub fn builder() -> CopyClaimsBuilder {
        CopyClaimsBuilder { rules: Vec::new() }
    }

    /// The claims for one request, from the [`VerifiedClaims`] in its
    /// extensions: what a claims closure returns
    /// (`.request_claims(move |parts| copy.claims_for(parts))`).
    ///
    /// # Errors
    ///
    /// A 500 [`ClaimsRejection`] when the request has no verified claims; a
    /// 401 one when a copied `sub`, `iss` or `aud` is not of its form. See
    /// [`CopyClaims`].
    pub fn claims_for(&self, parts: &Parts) -> Result<RequestClaims, ClaimsRejection> {
        let verified = parts.extensions.get::<VerifiedClaims>().ok_or_else(|| {
            ClaimsRejection::internal(
                "no verified claims in the request: a JwtVerifierLayer must run before the signer",
            )
        })?;
        self.copy_from(verified)
    }

    /// The claims copied from `verified`, for a closure that adds more of
    /// its own.
    ///
    /// # Errors
    ///
    /// A 401 [`ClaimsRejection`] when a copied `sub`, `iss` or `aud` is not
    /// of its form.
    pub fn copy_from(&self, verified: &VerifiedClaims) -> Result<RequestClaims, ClaimsRejection> {
        let mut claims = RequestClaims::new();
        for rule in self.rules.iter() {
            let Some(value) = verified.get(&rule.from) else {
                continue;
            };
            claims = match (rule.to.as_str(), value) {
                ("sub", Value::String(sub)) => claims.subject(sub.clone()),
                ("iss", Value::String(iss)) => claims.issuer(iss.clone()),
                ("aud", Value::String(aud)) => claims.audience(aud.clone()),
                ("aud", Value::Array(list)) if list.iter().all(Value::is_string) => {
                    claims.audiences(verified.audience().map(str::to_owned))
                }
                ("sub" | "iss", _) => return Err(wrong_form(rule, "a string")),
                ("aud", _) => return Err(wrong_form(rule, "a string or an array of strings")),
                (to, value) => claims.claim(to, value.clone())?,
            };
        }
        Ok(claims)
    }
}

fn wrong_form(rule: &Rule, form: &str) -> ClaimsRejection {
    ClaimsRejection::unauthorized(format!(
        "the token's {:?} claim cannot become {:?}: it is not {form}",
        rule.from, rule.to
    ))
}

/// Builds a [`CopyClaims`]; see [`CopyClaims::builder`]. The setters only
/// record the names; [`build`](Self::build) checks them.
#[derive(Debug, Clone)]
#[must_use]
pub struct CopyClaimsBuilder {
    rules: Vec<Rule>,
}

impl CopyClaimsBuilder {
    /// Copies the claim `name` under the same name.
    pub fn claim(mut self, name: impl Into<String>) -> Self {
        let name = name.into();
        self.rules.push(Rule {
            setting: "claim",
            from: name.clone(),
            to: name,
        });
        self
    }

    /// Copies the claim `from` as `to` (`rename("email", "user_email")`).
    /// The source may be any claim, `iat` or `jti` too (as
    /// `rename("jti", "idp_jti")`).
    pub fn rename(mut self, from: impl Into<String>, to: impl Into<String>) -> Self {
        self.rules.push(Rule {
            setting: "rename",
            from: from.into(),
            to: to.into(),
        });
        self
    }

    /// Checks the names and builds the mapping.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] (setting `"claim"` or `"rename"`) for an empty
    /// name, a target the signer computes itself (`iat`, `nbf`, `exp`,
    /// `jti`), or a target named twice: a claim name appears once in a
    /// token.
    pub fn build(self) -> Result<CopyClaims, ConfigError> {
        let mut targets = HashSet::new();
        for rule in &self.rules {
            if rule.from.is_empty() || rule.to.is_empty() {
                return Err(ConfigError::new(
                    rule.setting,
                    (&rule.from, &rule.to),
                    "a claim name must not be empty",
                ));
            }
            if COMPUTED_CLAIMS.contains(&rule.to.as_str()) {
                return Err(ConfigError::new(
                    rule.setting,
                    &rule.to,
                    "iat, nbf, exp and jti are always computed by the signer: copy them under \
                     another name",
                ));
            }
            if !targets.insert(rule.to.as_str()) {
                return Err(ConfigError::new(
                    rule.setting,
                    &rule.to,
                    "this claim is already copied: a claim name appears once in a token",
                ));
            }
        }
        Ok(CopyClaims {
            rules: self.rules.into(),
        })
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use bytes::Bytes;
    use http::{Request, Response, StatusCode};
    use http_body_util::{BodyExt, Full};
    use serde_json::{Map, json};
    use tower::{Layer, ServiceExt, service_fn};

    use super::*;
    use crate::keys::Algorithm;
    use crate::{JwtSignerLayer, KeyRegistry};

    fn verified(claims: Value) -> VerifiedClaims {
        let Value::Object(map) = claims else {
            panic!("an object")
        };
        VerifiedClaims::new(map, None, Algorithm::ES256)
    }

    fn members(claims: &RequestClaims) -> Map<String, Value> {
        let mut out = b"{\"x\":0".to_vec();
        claims.write_members(&mut out);
        out.push(b'}');
        let Value::Object(mut map) = serde_json::from_slice(&out).unwrap() else {
            unreachable!()
        };
        map.remove("x");
        map
    }

    #[test]
    fn chosen_claims_are_copied_and_renamed_and_nothing_else() {
        let copy = CopyClaims::builder()
            .claim("sub")
            .claim("aud")
            .claim("scope")
            .rename("email", "user_email")
            .rename("jti", "idp_jti")
            .claim("absent")
            .build()
            .unwrap();
        let claims = copy
            .copy_from(&verified(json!({
                "sub": "alice", "iss": "idp", "aud": ["gw", "x"], "exp": 1, "jti": "j1",
                "email": "a@example.com", "scope": {"orders": ["read"]}, "secret": "s"
            })))
            .unwrap();
        assert_eq!(
            Value::Object(members(&claims)),
            json!({"sub": "alice", "aud": ["gw", "x"], "scope": {"orders": ["read"]},
                   "user_email": "a@example.com", "idp_jti": "j1"})
        );
    }

    #[test]
    fn registered_targets_keep_their_form() {
        let copy = CopyClaims::builder()
            .rename("user", "sub")
            .rename("org", "aud")
            .build()
            .unwrap();
        let one = copy
            .copy_from(&verified(json!({"user": "bob", "org": "acme"})))
            .unwrap();
        assert_eq!(
            Value::Object(members(&one)),
            json!({"sub": "bob", "aud": "acme"})
        );
        for claims in [
            json!({"user": 7}),
            json!({"user": ["bob"]}),
            json!({"org": 7}),
            json!({"org": ["acme", 7]}),
        ] {
            let err = copy.copy_from(&verified(claims.clone())).unwrap_err();
            assert_eq!(err.status(), StatusCode::UNAUTHORIZED, "{claims}");
        }
    }

    #[test]
    fn bad_names_are_refused_when_built() {
        for (builder, setting) in [
            (CopyClaims::builder().claim(""), "claim"),
            (CopyClaims::builder().rename("", "a"), "rename"),
            (CopyClaims::builder().rename("a", ""), "rename"),
            (CopyClaims::builder().claim("exp"), "claim"),
            (CopyClaims::builder().rename("iat", "nbf"), "rename"),
            (CopyClaims::builder().rename("sub", "jti"), "rename"),
            (
                CopyClaims::builder().claim("sub").rename("user", "sub"),
                "rename",
            ),
        ] {
            assert_eq!(builder.build().unwrap_err().setting(), setting);
        }
        assert!(
            CopyClaims::builder()
                .claim("sub")
                .rename("sub", "user")
                .build()
                .is_ok(),
            "one source may be copied twice"
        );
    }

    #[tokio::test]
    async fn as_the_signers_claims_closure() {
        let copy = CopyClaims::builder().claim("sub").build().unwrap();
        let layer = JwtSignerLayer::builder(KeyRegistry::generate(Algorithm::ES256).unwrap())
            .subject("gateway-default")
            .request_claims(move |parts| copy.claims_for(parts))
            .build()
            .unwrap();
        let service = layer.layer(service_fn(|request: Request<()>| async move {
            let token = request.headers()["authorization"]
                .to_str()
                .unwrap()
                .to_owned();
            Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(token))))
        }));

        // Verified claims in the request: their `sub` wins over the static one.
        let mut request = Request::new(());
        request
            .extensions_mut()
            .insert(verified(json!({"sub": "alice", "exp": 1})));
        let response = service.clone().oneshot(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let value = response.into_body().collect().await.unwrap().to_bytes();
        let token = std::str::from_utf8(&value)
            .unwrap()
            .strip_prefix("Bearer ")
            .unwrap();
        let payload = token.split('.').nth(1).unwrap();
        let payload = {
            use base64::Engine as _;
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(payload)
                .unwrap()
        };
        let claims: Value = serde_json::from_slice(&payload).unwrap();
        assert_eq!(claims["sub"], "alice");

        // None: 500, nothing forwarded.
        let response = service.oneshot(Request::new(())).await.unwrap();
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(
            response.extensions().get::<crate::signer::Refusal>(),
            Some(&crate::signer::Refusal::ClaimsFailed)
        );
    }
}
