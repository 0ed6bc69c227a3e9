//! Misconfigurations listed in SECURITY.md ("Bad configuration") for the
//! signer, one test each: the setting `build()` refuses, the reason it
//! gives, and no panic. The other areas' are in the other test binaries'
//! `config.rs`.

use std::time::Duration;

use tower_jwt_signer::signer::{
    ExistingToken, JwtSignerLayerBuilder, Offload, TokenCache, TokenReuse,
};
use tower_jwt_signer::{Algorithm, ConfigError, JwtSignerLayer, KeyRegistry};

fn builder() -> JwtSignerLayerBuilder {
    JwtSignerLayer::builder(KeyRegistry::generate(Algorithm::ES256).unwrap())
}

/// What `build()` refuses, which must be `setting`.
#[track_caller]
fn refused(builder: JwtSignerLayerBuilder, setting: &str) -> ConfigError {
    let err = builder.build().unwrap_err();
    assert_eq!(err.setting(), setting, "{err}");
    err
}

// --- Signer -------------------------------------------------------------------

#[test]
fn ttl_zero_fractional_or_longer_than_the_registrys_is_refused() {
    // A registry of one-day tokens, the longest a registry takes.
    let registry = KeyRegistry::builder()
        .token_ttl(Duration::from_secs(24 * 3600))
        .build()
        .unwrap();
    for ttl in [
        Duration::ZERO,
        Duration::from_millis(1500),
        Duration::from_secs(24 * 3600 + 1),
        Duration::MAX,
    ] {
        let err = refused(JwtSignerLayer::builder(registry.clone()).ttl(ttl), "ttl");
        assert!(err.reason().contains("lifetime"), "{ttl:?}: {err}");
    }
    // The default registry's tokens live 60 s: a signer may not sign longer.
    let err = refused(builder().ttl(Duration::from_secs(61)), "ttl");
    assert!(
        err.reason().contains("registry's token lifetime (60 s"),
        "{err}"
    );
    assert!(builder().ttl(Duration::from_secs(60)).build().is_ok());
}

#[test]
fn nbf_backdate_over_an_hour_or_fractional_is_refused() {
    for backdate in [
        Duration::from_secs(3601),
        Duration::from_millis(10),
        Duration::MAX,
    ] {
        refused(
            builder().not_before_backdate(backdate),
            "not_before_backdate",
        );
    }
}

#[test]
fn invalid_header_name_is_refused() {
    for name in ["", "bad header", "x-jwt\r\nx-evil", "x-jwt:", "é"] {
        let err = refused(builder().header_name(name), "header_name");
        assert!(
            err.reason().contains("not a valid HTTP header name"),
            "{err}"
        );
    }
}

#[test]
fn hop_by_hop_and_framing_header_names_are_refused() {
    for name in [
        "Connection",
        "keep-alive",
        "TE",
        "trailer",
        "Transfer-Encoding",
        "upgrade",
        "host",
        "content-length",
        "proxy-authorization",
    ] {
        let err = refused(builder().header_name(name), "header_name");
        assert!(err.reason().contains("hop-by-hop or framing"), "{err}");
    }
}

#[test]
fn scheme_with_cr_lf_space_or_nothing_is_refused() {
    for scheme in [
        "Bearer\r\nX-Evil: 1",
        "Bearer\n",
        "Bear er",
        "",
        "Bearer:",
        &"B".repeat(65),
    ] {
        refused(builder().scheme(scheme), "scheme");
    }
}

#[test]
fn empty_issuer_subject_or_audience_is_refused() {
    for (builder, setting, claim) in [
        (builder().issuer(""), "issuer", "`iss`"),
        (builder().subject(""), "subject", "`sub`"),
        (builder().audience(""), "audience", "`aud`"),
        (
            builder().audiences(Vec::<String>::new()),
            "audiences",
            "`aud`",
        ),
        (builder().audiences(["a", ""]), "audiences", "`aud`"),
    ] {
        let err = refused(builder, setting);
        assert!(err.reason().contains(claim), "{err}");
        assert!(err.reason().contains("cannot be empty"), "{err}");
    }
}

#[test]
fn invalid_token_type_is_refused() {
    for typ in ["", "J W T", "jwt\r\n", &"j".repeat(65)] {
        refused(builder().token_type(typ), "token_type");
    }
}

#[test]
fn the_signers_own_claims_cannot_be_set() {
    for name in ["iat", "nbf", "exp", "jti"] {
        let err = refused(builder().claim(name, 1), "claim");
        assert!(err.reason().contains("computed by the signer"), "{err}");
        assert_eq!(err.value(), Some(format!("{name:?}").as_str()));
        let err = refused(
            builder().template_claim(name, "${req.path}"),
            "template_claim",
        );
        assert!(err.reason().contains("computed by the signer"), "{err}");
    }
    // iss, sub and aud have their own setters, which check them.
    let err = refused(builder().claim("iss", ""), "claim");
    assert!(err.reason().contains("typed setter"), "{err}");
    let err = refused(builder().claim("", 1), "claim");
    assert!(err.reason().contains("cannot be empty"), "{err}");
}

#[test]
fn broken_claim_templates_are_refused() {
    for (template, reason) in [
        ("${req.headers.x", "has no closing"),
        ("${req.body}", "unknown expression"),
        ("${req.headers.bad name}", "invalid name"),
        ("${req.query.}", "invalid name"),
        ("id-${number:req.headers.x}", "must be the whole template"),
        ("${boolean:req.query.debug:yes}", "is not a JSON boolean"),
        (
            "${number:req.query.n:444444444444444444444444}",
            "would not keep its value",
        ),
    ] {
        let err = refused(builder().template_claim("t", template), "template_claim");
        assert!(err.reason().contains("claim \"t\""), "{template}: {err}");
        assert!(err.reason().contains(reason), "{template}: {err}");
    }
    let err = refused(
        builder().template_claim("iss", "${number:req.headers.x}"),
        "template_claim",
    );
    assert!(err.reason().contains("`iss` is a string"), "{err}");
}

#[test]
fn unknown_existing_token_policy_is_refused() {
    for policy in ["", "Replace", "fail", "keep "] {
        let err = policy.parse::<ExistingToken>().unwrap_err();
        assert_eq!(err.setting(), "existing_token", "{err}");
        assert!(err.reason().contains("replace, keep or reject"), "{err}");
    }
}

#[test]
fn token_size_limit_of_zero_is_refused() {
    refused(builder().max_token_len(0), "max_token_len");
}

#[test]
fn token_reuse_bounds_out_of_range_are_refused() {
    for entries in [0, 1_000_001, usize::MAX] {
        let reuse = TokenReuse::new().max_entries(entries);
        refused(builder().reuse_tokens(reuse), "max_entries");
        assert_eq!(TokenCache::new(reuse).unwrap_err().setting(), "max_entries");
    }
    for percent in [0, 101, u8::MAX] {
        let reuse = TokenReuse::new().min_remaining_percent(percent);
        refused(builder().reuse_tokens(reuse), "min_remaining_percent");
        assert_eq!(
            TokenCache::new(reuse).unwrap_err().setting(),
            "min_remaining_percent"
        );
    }
    let widest = TokenReuse::new()
        .max_entries(1_000_000)
        .min_remaining_percent(100);
    assert!(builder().reuse_tokens(widest).build().is_ok());
}

#[test]
fn unknown_offload_mode_is_refused() {
    for mode in ["", "Inline", "threads", "auto "] {
        let err = mode.parse::<Offload>().unwrap_err();
        assert_eq!(err.setting(), "offload", "{err}");
        assert!(err.reason().contains("inline, blocking or auto"), "{err}");
    }
}
