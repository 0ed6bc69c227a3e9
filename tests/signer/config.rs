//! Misconfigurations listed in SECURITY.md ("Bad configuration") for the
//! signer, one test each: the exact typed error it gives, and no panic. The
//! other areas' are in the other test binaries' `config.rs`.

use std::time::Duration;

use tower_jwt_signer::signer::{
    ExistingToken, Offload, SignerConfigError, TemplateError, TokenReuse,
};
use tower_jwt_signer::{Algorithm, JwtSignerLayer, KeyRegistry};

fn layer() -> JwtSignerLayer {
    JwtSignerLayer::new(KeyRegistry::generate(Algorithm::ES256).unwrap())
}

// --- Signer -------------------------------------------------------------------

#[test]
fn ttl_zero_fractional_or_longer_than_a_day_is_refused() {
    for ttl in [
        Duration::ZERO,
        Duration::from_millis(1500),
        Duration::from_secs(24 * 3600 + 1),
        Duration::MAX,
    ] {
        let err = layer().ttl(ttl).unwrap_err();
        assert!(
            matches!(err, SignerConfigError::InvalidTtl(t) if t == ttl),
            "{ttl:?}: {err:?}"
        );
    }
}

#[test]
fn nbf_backdate_over_an_hour_or_fractional_is_refused() {
    for backdate in [
        Duration::from_secs(3601),
        Duration::from_millis(10),
        Duration::MAX,
    ] {
        let err = layer().not_before_backdate(backdate).unwrap_err();
        assert!(
            matches!(err, SignerConfigError::InvalidBackdate(b) if b == backdate),
            "{err:?}"
        );
    }
}

#[test]
fn invalid_header_name_is_refused() {
    for name in ["", "bad header", "x-jwt\r\nx-evil", "x-jwt:", "é"] {
        let err = layer().header_name(name).unwrap_err();
        assert!(
            matches!(err, SignerConfigError::InvalidHeaderName(_)),
            "{name:?}: {err:?}"
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
        let err = layer().header_name(name).unwrap_err();
        assert!(
            matches!(err, SignerConfigError::ReservedHeaderName(_)),
            "{name}: {err:?}"
        );
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
        let err = layer().scheme(scheme).unwrap_err();
        assert!(
            matches!(err, SignerConfigError::InvalidScheme(_)),
            "{scheme:?}: {err:?}"
        );
    }
}

#[test]
fn empty_issuer_subject_or_audience_is_refused() {
    let err = layer().issuer("").unwrap_err();
    assert!(
        matches!(err, SignerConfigError::EmptyClaim("iss")),
        "{err:?}"
    );
    let err = layer().subject("").unwrap_err();
    assert!(
        matches!(err, SignerConfigError::EmptyClaim("sub")),
        "{err:?}"
    );
    let err = layer().audience("").unwrap_err();
    assert!(
        matches!(err, SignerConfigError::EmptyClaim("aud")),
        "{err:?}"
    );
    let err = layer().audiences(Vec::<String>::new()).unwrap_err();
    assert!(
        matches!(err, SignerConfigError::EmptyClaim("aud")),
        "{err:?}"
    );
    let err = layer().audiences(["a", ""]).unwrap_err();
    assert!(
        matches!(err, SignerConfigError::EmptyClaim("aud")),
        "{err:?}"
    );
}

#[test]
fn invalid_token_type_is_refused() {
    for typ in ["", "J W T", "jwt\r\n", &"j".repeat(65)] {
        let err = layer().token_type(typ).unwrap_err();
        assert!(
            matches!(err, SignerConfigError::InvalidTokenType(_)),
            "{typ:?}: {err:?}"
        );
    }
}

#[test]
fn the_signers_own_claims_cannot_be_set() {
    for name in ["iat", "nbf", "exp", "jti"] {
        let err = layer().claim(name, 1).unwrap_err();
        assert!(
            matches!(&err, SignerConfigError::ReservedClaim(c) if c.name() == name),
            "{err:?}"
        );
        let err = layer().template_claim(name, "${req.path}").unwrap_err();
        assert!(
            matches!(&err, SignerConfigError::ReservedClaim(c) if c.name() == name),
            "{err:?}"
        );
    }
    // iss, sub and aud have their own setters, which check them.
    let err = layer().claim("iss", "").unwrap_err();
    assert!(
        matches!(err, SignerConfigError::ReservedClaim(_)),
        "{err:?}"
    );
    let err = layer().claim("", 1).unwrap_err();
    assert!(
        matches!(err, SignerConfigError::InvalidClaimName(_)),
        "{err:?}"
    );
}

#[test]
fn broken_claim_templates_are_refused() {
    type Check = fn(&TemplateError) -> bool;
    let cases: [(&str, Check); 6] = [
        ("${req.headers.x", |e| {
            matches!(e, TemplateError::Unterminated { at: 0 })
        }),
        ("${req.body}", |e| {
            matches!(e, TemplateError::UnknownExpression { .. })
        }),
        ("${req.headers.bad name}", |e| {
            matches!(e, TemplateError::InvalidName { .. })
        }),
        ("${req.query.}", |e| {
            matches!(e, TemplateError::InvalidName { .. })
        }),
        ("id-${number:req.headers.x}", |e| {
            matches!(e, TemplateError::TypedNotAlone { expected: "number" })
        }),
        ("${boolean:req.query.debug:yes}", |e| {
            matches!(
                e,
                TemplateError::InvalidDefault {
                    expected: "boolean",
                    ..
                }
            )
        }),
    ];
    for (template, expected) in cases {
        let err = layer().template_claim("t", template).unwrap_err();
        match &err {
            SignerConfigError::Template { claim, source } => {
                assert_eq!(claim, "t");
                assert!(expected(source), "{template}: {source:?}");
            }
            other => panic!("{template}: {other:?}"),
        }
    }
    let err = layer()
        .template_claim("iss", "${number:req.headers.x}")
        .unwrap_err();
    assert!(
        matches!(err, SignerConfigError::TemplateType { .. }),
        "{err:?}"
    );
}

#[test]
fn unknown_existing_token_policy_is_refused() {
    for policy in ["", "Replace", "fail", "keep "] {
        let err = policy.parse::<ExistingToken>().unwrap_err();
        assert!(
            matches!(err, SignerConfigError::InvalidPolicy(_)),
            "{err:?}"
        );
    }
}

#[test]
fn token_size_limit_of_zero_is_refused() {
    let err = layer().max_token_len(0).unwrap_err();
    assert!(
        matches!(err, SignerConfigError::InvalidMaxTokenLen(0)),
        "{err:?}"
    );
}

#[test]
fn token_reuse_bounds_out_of_range_are_refused() {
    for entries in [0, TokenReuse::MAX_ENTRIES + 1, usize::MAX] {
        let err = TokenReuse::new().max_entries(entries).unwrap_err();
        assert!(
            matches!(err, SignerConfigError::InvalidReuseEntries(e) if e == entries),
            "{err:?}"
        );
    }
    for percent in [0, 101, u8::MAX] {
        let err = TokenReuse::new()
            .min_remaining_percent(percent)
            .unwrap_err();
        assert!(
            matches!(err, SignerConfigError::InvalidReusePercent(p) if p == percent),
            "{err:?}"
        );
    }
}

#[test]
fn unknown_offload_mode_is_refused() {
    for mode in ["", "Inline", "threads", "auto "] {
        let err = mode.parse::<Offload>().unwrap_err();
        assert!(
            matches!(err, SignerConfigError::InvalidOffload(_)),
            "{err:?}"
        );
    }
}
