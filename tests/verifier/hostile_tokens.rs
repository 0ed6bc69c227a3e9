//! Hostile tokens against a backend that verifies with `RemoteJwks`, over
//! 127.0.0.1: every one is refused with 401 (or 400 for a malformed
//! request), never a 5xx, the handler never runs, nothing is fetched from a
//! URL a token names, and unknown kids cost at most one JWKS fetch.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD_NO_PAD;
use http::StatusCode;
use openssl::bn::{BigNum, BigNumContext};
use openssl::ec::EcGroup;
use openssl::ecdsa::EcdsaSig;
use openssl::hash::MessageDigest;
use openssl::pkey::PKey;
use openssl::sign::Signer;
use serde_json::json;
use tower_jwt_signer::{
    Algorithm, JwksService, KeyRegistry, RemoteJwks, SigningKey, Verifier, VerifyError,
};

use crate::support::jose::{b64, compact, public_key, unb64};
use crate::support::verifier::{
    Backend, JwksServer, Mode, claims, get, get_bearer, header_of, sign_with_header,
};

/// A token made of raw parts: the header and payload as given, base64url.
fn raw(header: &[u8], payload: &[u8], signature: &[u8]) -> String {
    format!("{}.{}.{}", b64(header), b64(payload), b64(signature))
}

fn hmac(secret: &[u8], input: &[u8]) -> Vec<u8> {
    let key = PKey::hmac(secret).unwrap();
    let mut signer = Signer::new(MessageDigest::sha256(), &key).unwrap();
    signer.update(input).unwrap();
    signer.sign_to_vec().unwrap()
}

/// A token signed with HMAC-SHA256 under `secret`.
fn hs256(kid: &str, secret: &[u8]) -> String {
    let header = json!({"alg": "HS256", "typ": "JWT", "kid": kid});
    let input = format!("{}.{}", b64(header.to_string()), b64(claims().to_string()));
    let mac = hmac(secret, input.as_bytes());
    format!("{input}.{}", b64(mac))
}

/// Replaces the signature of a valid token.
fn with_signature(token: &str, signature: &[u8]) -> String {
    let (input, _) = token.rsplit_once('.').unwrap();
    format!("{input}.{}", b64(signature))
}

/// Every upper/lower-case spelling of `none`.
fn none_casings() -> Vec<String> {
    (0..16u8)
        .map(|mask| {
            "none"
                .chars()
                .enumerate()
                .map(|(i, c)| {
                    if mask & (1 << i) != 0 {
                        c.to_ascii_uppercase()
                    } else {
                        c
                    }
                })
                .collect()
        })
        .collect()
}

fn p256_order() -> Vec<u8> {
    let group = EcGroup::from_curve_name(openssl::nid::Nid::X9_62_PRIME256V1).unwrap();
    let mut order = BigNum::new().unwrap();
    group
        .order(&mut order, &mut BigNumContext::new().unwrap())
        .unwrap();
    order.to_vec_padded(32).unwrap()
}

fn self_signed_certificate(key: &SigningKey) -> Vec<u8> {
    let pkey = PKey::private_key_from_pem(key.to_pkcs8_pem().unwrap().as_bytes()).unwrap();
    let mut name = openssl::x509::X509NameBuilder::new().unwrap();
    name.append_entry_by_text("CN", "attacker").unwrap();
    let name = name.build();
    let mut builder = openssl::x509::X509::builder().unwrap();
    builder.set_version(2).unwrap();
    builder.set_subject_name(&name).unwrap();
    builder.set_issuer_name(&name).unwrap();
    builder.set_pubkey(&pkey).unwrap();
    builder
        .set_not_before(&openssl::asn1::Asn1Time::days_from_now(0).unwrap())
        .unwrap();
    builder
        .set_not_after(&openssl::asn1::Asn1Time::days_from_now(1).unwrap())
        .unwrap();
    builder.sign(&pkey, MessageDigest::sha256()).unwrap();
    builder.build().to_der().unwrap()
}

#[tokio::test]
async fn hostile_tokens_are_refused_without_a_5xx() {
    // The gateway publishes an RS256 key (active) and an ES256 key (next).
    let rs = SigningKey::generate(Algorithm::RS256).unwrap();
    let es = SigningKey::generate(Algorithm::ES256).unwrap();
    let registry = KeyRegistry::new(rs.clone());
    registry.add_next(es.clone()).unwrap();
    let jwks = JwksServer::start(Mode::Jwks(JwksService::new(registry.clone()))).await;
    let remote = RemoteJwks::new(jwks.url()).unwrap();
    remote.prefetch().await.unwrap();
    let backend = Backend::start(
        Verifier::builder(remote.clone())
            .issuer("gateway")
            .audience("api")
            .build()
            .unwrap(),
    )
    .await;

    // The attacker's own key, its JWKS on another local server, and a
    // certificate for it.
    let attacker = SigningKey::generate(Algorithm::ES256).unwrap();
    let attacker_jwks = JwksServer::start(Mode::Jwks(JwksService::new(KeyRegistry::new(
        attacker.clone(),
    ))))
    .await;
    let attacker_cert = self_signed_certificate(&attacker);

    let rs_jwk = rs.public_jwk().to_value();
    let es_jwk = es.public_jwk().to_value();
    let good_es = compact(&es, &claims());
    let good_rs = compact(&rs, &claims());
    let es_signature = unb64(good_es.rsplit('.').next().unwrap());
    // Each hostile token with the refusal it must get: the reason is
    // asserted, not only the status (the challenge's error_description is
    // the `VerifyError`'s description).
    let mut hostile: Vec<(String, String, VerifyError)> = Vec::new();
    let mut add = |name: &str, expected: VerifyError, token: String| {
        hostile.push((name.to_owned(), token, expected));
    };
    use VerifyError::{
        CriticalHeader, Expired, InvalidClaim, InvalidSignature, KeyMismatch, KidRequired,
        Malformed, MissingClaim, NotYetValid, TooLarge, UnknownKid, UnsupportedAlgorithm,
        WrongAudience, WrongIssuer,
    };

    // alg none, in every casing, with and without a signature.
    for casing in none_casings() {
        let header = json!({"alg": casing, "typ": "JWT", "kid": es.kid().as_str()});
        let unsigned = raw(
            header.to_string().as_bytes(),
            claims().to_string().as_bytes(),
            b"",
        );
        add(
            &format!("alg {casing}, no signature"),
            UnsupportedAlgorithm,
            unsigned.clone(),
        );
        add(
            &format!("alg {casing}, junk signature"),
            UnsupportedAlgorithm,
            with_signature(&unsigned, b"junk"),
        );
        add(
            &format!("alg {casing}, real ES256 signature"),
            UnsupportedAlgorithm,
            with_signature(&unsigned, &es_signature),
        );
    }

    // HS256 with the public key as the HMAC secret.
    let rsa_public = public_key(&rs_jwk);
    let spki_pem = rsa_public.public_key_to_pem().unwrap();
    let pkcs1_pem = rsa_public.rsa().unwrap().public_key_to_pem_pkcs1().unwrap();
    let raw_n = unb64(rs_jwk["n"].as_str().unwrap());
    for (what, secret) in [
        ("SPKI PEM", spki_pem.clone()),
        ("PKCS#1 PEM", pkcs1_pem),
        ("raw n", raw_n),
        ("the JWK text", rs_jwk.to_string().into_bytes()),
        ("the JWKS bytes", registry.current().jwks_bytes().to_vec()),
    ] {
        add(
            &format!("HS256 keyed with {what}"),
            UnsupportedAlgorithm,
            hs256(rs.kid(), &secret),
        );
    }
    let mut ec_point = vec![4u8];
    ec_point.extend(unb64(es_jwk["x"].as_str().unwrap()));
    ec_point.extend(unb64(es_jwk["y"].as_str().unwrap()));
    add(
        "HS256 keyed with the EC point",
        UnsupportedAlgorithm,
        hs256(es.kid(), &ec_point),
    );

    // The attacker's key under a real kid, and key/algorithm confusion.
    let mut header = header_of(&attacker);
    header["kid"] = json!(es.kid().as_str());
    add(
        "attacker key, real kid",
        InvalidSignature,
        sign_with_header(&attacker, &header, &claims()),
    );
    let ps_with_rs_key = SigningKey::from_pkcs8_pem(rs.to_pkcs8_pem().unwrap(), Algorithm::PS256)
        .unwrap()
        .with_kid(rs.kid().clone());
    add(
        "PS256 by the RS256 key (the key says RS256)",
        KeyMismatch,
        compact(&ps_with_rs_key, &claims()),
    );
    let mut header = header_of(&es);
    header["alg"] = json!("RS256");
    add(
        "RS256 named with the EC kid",
        KeyMismatch,
        with_signature(&sign_with_header(&es, &header, &claims()), &es_signature),
    );
    let mut header = header_of(&rs);
    header["alg"] = json!("ES256");
    add(
        "ES256 named with the RSA kid",
        KeyMismatch,
        sign_with_header(&es, &header, &claims()),
    );

    // Embedded keys and key URLs: never used, never fetched.
    let attacker_jwk = attacker.public_jwk().to_value();
    let mut header = header_of(&attacker);
    header["kid"] = json!(es.kid().as_str());
    header["jwk"] = attacker_jwk.clone();
    add(
        "embedded jwk, real kid",
        InvalidSignature,
        sign_with_header(&attacker, &header, &claims()),
    );
    let header = json!({"alg": "ES256", "jwk": attacker_jwk});
    add(
        "embedded jwk, no kid",
        KidRequired,
        sign_with_header(&attacker, &header, &claims()),
    );
    let mut header = header_of(&attacker);
    header["jku"] = json!(attacker_jwks.url());
    add(
        "jku to the attacker's JWKS",
        UnknownKid,
        sign_with_header(&attacker, &header, &claims()),
    );
    let mut header = header_of(&attacker);
    header["kid"] = json!(es.kid().as_str());
    header["x5u"] = json!(format!("http://{}/cert.pem", attacker_jwks.addr));
    add(
        "x5u to the attacker's server",
        InvalidSignature,
        sign_with_header(&attacker, &header, &claims()),
    );
    let mut header = header_of(&attacker);
    header["kid"] = json!(es.kid().as_str());
    header["x5c"] = json!([STANDARD_NO_PAD.encode(&attacker_cert)]);
    add(
        "x5c with the attacker's certificate",
        InvalidSignature,
        sign_with_header(&attacker, &header, &claims()),
    );

    // Kids that try to escape a lookup.
    for kid in [
        "../../../../etc/passwd".to_owned(),
        "' OR '1'='1' --".to_owned(),
        "kid\"\r\nX-Injected: 1".to_owned(),
        "%00".to_owned(),
        "k".repeat(4000),
    ] {
        let mut header = header_of(&es);
        header["kid"] = json!(kid);
        add(
            &format!("kid {:?}", &kid[..kid.len().min(24)]),
            UnknownKid,
            sign_with_header(&es, &header, &claims()),
        );
    }
    let not_a_string = Malformed("the header's kid is not a string");
    for (kid, expected) in [
        (json!(""), UnknownKid),
        (json!(5), not_a_string.clone()),
        (json!(null), not_a_string.clone()),
        (json!(["a"]), not_a_string),
    ] {
        let mut header = header_of(&es);
        header["kid"] = kid.clone();
        add(
            &format!("kid {kid}"),
            expected,
            sign_with_header(&es, &header, &claims()),
        );
    }

    // ECDSA signatures of the wrong shape.
    let order = p256_order();
    let (r, s) = es_signature.split_at(32);
    let der = EcdsaSig::from_private_components(
        BigNum::from_slice(r).unwrap(),
        BigNum::from_slice(s).unwrap(),
    )
    .unwrap()
    .to_der()
    .unwrap();
    for (what, signature) in [
        ("63 bytes", es_signature[..63].to_vec()),
        ("65 bytes", [&es_signature[..], &[0]].concat()),
        ("DER", der),
        ("r = s = 0", vec![0; 64]),
        ("r = 0", [&[0u8; 32][..], s].concat()),
        ("s = 0", [r, &[0u8; 32][..]].concat()),
        ("s = n", [r, &order[..]].concat()),
        ("r = n", [&order[..], s].concat()),
    ] {
        add(
            &format!("ES256 signature {what}"),
            InvalidSignature,
            with_signature(&good_es, &signature),
        );
    }

    // Tampering and stripping.
    let parts: Vec<&str> = good_es.split('.').collect();
    let mut forged = claims();
    forged["sub"] = json!("mallory");
    add(
        "tampered payload",
        InvalidSignature,
        format!("{}.{}.{}", parts[0], b64(forged.to_string()), parts[2]),
    );
    let not_three_parts = Malformed("the token is not three base64url parts separated by dots");
    add(
        "stripped signature",
        Malformed("the signature is missing"),
        format!("{}.{}.", parts[0], parts[1]),
    );
    add(
        "two parts",
        not_three_parts.clone(),
        format!("{}.{}", parts[0], parts[1]),
    );
    add(
        "four parts",
        not_three_parts,
        format!("{good_es}.{}", parts[2]),
    );
    add(
        "RSA signature truncated",
        InvalidSignature,
        with_signature(&good_rs, &unb64(good_rs.rsplit('.').next().unwrap())[1..]),
    );

    // Claims that do not pass.
    let now = crate::support::verifier::now();
    for (what, change, expected) in [
        ("expired", json!({"exp": now - 3600}), Expired),
        ("not yet valid", json!({"nbf": now + 3600}), NotYetValid),
        ("wrong iss", json!({"iss": "evil"}), WrongIssuer),
        ("wrong aud", json!({"aud": "other"}), WrongAudience),
        (
            "aud array without us",
            json!({"aud": ["a", "b"]}),
            WrongAudience,
        ),
        (
            "exp as a string",
            json!({"exp": (now + 600).to_string()}),
            InvalidClaim("exp"),
        ),
        (
            "no exp",
            json!({"exp": null}),
            MissingClaim("exp".to_owned()),
        ),
    ] {
        let mut claims = claims();
        for (name, value) in change.as_object().unwrap() {
            if value.is_null() {
                claims.as_object_mut().unwrap().remove(name);
            } else {
                claims[name] = value.clone();
            }
        }
        add(what, expected, compact(&es, &claims));
    }

    // Malformed base64 and JSON (signed by the real key where it matters).
    let header_b64 = parts[0];
    add(
        "padded header",
        Malformed("the header is not strict base64url"),
        format!("{header_b64}=.{}.{}", parts[1], parts[2]),
    );
    add(
        "standard-alphabet signature",
        Malformed("the signature is not strict base64url"),
        format!(
            "{}.{}.{}+/",
            parts[0],
            parts[1],
            &parts[2][..parts[2].len() - 2]
        ),
    );
    // The signature is checked over the signing input as sent, before the
    // payload is decoded: the space makes it another input.
    add(
        "space inside",
        InvalidSignature,
        format!("{}.{} .{}", parts[0], parts[1], parts[2]),
    );
    let es_header = header_of(&es).to_string();
    let sign_raw = |header: &[u8], payload: &[u8]| {
        let input = format!("{}.{}", b64(header), b64(payload));
        let signature = es.sign(input.as_bytes()).unwrap();
        format!("{input}.{}", b64(signature))
    };
    let claims_text = claims().to_string();
    // Base64url whose unused trailing bits are not zero: decodes to the
    // same bytes in lax decoders, refused by a strict one. Signed by the
    // real key over exactly that text.
    let mut spaced = es_header.clone();
    while spaced.len() % 3 != 1 {
        spaced.insert(1, ' ');
    }
    let mut lax_header = b64(&spaced);
    let last = lax_header.pop().unwrap();
    let alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let value = alphabet.find(last).unwrap();
    assert_eq!(value & 0b1111, 0, "canonical to start with");
    lax_header.push(alphabet.as_bytes()[value | 1] as char);
    assert_eq!(
        base64::engine::GeneralPurpose::new(
            &base64::alphabet::URL_SAFE,
            base64::engine::GeneralPurposeConfig::new()
                .with_encode_padding(false)
                .with_decode_allow_trailing_bits(true)
                .with_decode_padding_mode(base64::engine::DecodePaddingMode::RequireNone),
        )
        .decode(&lax_header)
        .unwrap(),
        spaced.as_bytes(),
        "a lax decoder reads the same header"
    );
    let input = format!("{lax_header}.{}", b64(&claims_text));
    let signature = es.sign(input.as_bytes()).unwrap();
    add(
        "non-canonical header base64 (validly signed)",
        Malformed("the header is not strict base64url"),
        format!("{input}.{}", b64(signature)),
    );
    let header_not_json = Malformed("the header is not a JSON object");
    let payload_not_json = Malformed("the payload is not a JSON object");
    add(
        "header not JSON",
        header_not_json.clone(),
        sign_raw(b"not json", claims_text.as_bytes()),
    );
    add(
        "header an array",
        header_not_json.clone(),
        sign_raw(b"[\"ES256\"]", claims_text.as_bytes()),
    );
    add(
        "header not UTF-8",
        header_not_json.clone(),
        sign_raw(b"{\"alg\":\"ES256\xff\"}", claims_text.as_bytes()),
    );
    let duplicate_alg = format!(
        "{{\"alg\":\"ES256\",\"kid\":\"{}\",\"alg\":\"none\"}}",
        es.kid()
    );
    add(
        "header with alg twice",
        header_not_json,
        sign_raw(duplicate_alg.as_bytes(), claims_text.as_bytes()),
    );
    add(
        "payload not JSON",
        payload_not_json.clone(),
        sign_raw(es_header.as_bytes(), b"not json"),
    );
    add(
        "payload an array",
        payload_not_json.clone(),
        sign_raw(es_header.as_bytes(), b"[1,2]"),
    );
    let duplicate_exp = format!(
        "{{\"iss\":\"gateway\",\"aud\":\"api\",\"exp\":{},\"exp\":1}}",
        now + 600
    );
    add(
        "payload with exp twice",
        payload_not_json,
        sign_raw(es_header.as_bytes(), duplicate_exp.as_bytes()),
    );
    let mut crit = header_of(&es);
    crit["crit"] = json!(["exp"]);
    crit["exp"] = json!(now + 600);
    add(
        "crit header (validly signed)",
        CriticalHeader,
        sign_with_header(&es, &crit, &claims()),
    );

    // Oversized tokens: refused by size, before parsing.
    let mut big = claims();
    big["padding"] = json!("x".repeat(9000));
    let too_large = |token: &str| TooLarge {
        len: token.len(),
        max: 8192,
    };
    let nine_kib = compact(&es, &big);
    add("9 KiB token", too_large(&nine_kib), nine_kib);
    let dots = ".".repeat(64 * 1024);
    add("64 KiB of dots", too_large(&dots), dots);

    assert!(hostile.len() > 100, "{}", hostile.len());
    for (name, token, expected) in &hostile {
        let reply = get_bearer(backend.addr, token).await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{name}");
        let challenge = reply
            .challenge()
            .unwrap_or_else(|| panic!("{name}: no challenge"));
        let description = challenge
            .strip_prefix("Bearer error=\"invalid_token\", error_description=\"")
            .and_then(|rest| rest.strip_suffix('"'))
            .unwrap_or_else(|| panic!("{name}: challenge {challenge}"));
        assert!(
            !description.contains(['"', '\\']) && !description.is_empty(),
            "{name}: {description}"
        );
        assert!(!description.contains("mallory") && !description.contains("etc/passwd"));
        assert_eq!(description, expected.description(), "{name}: {expected:?}");
    }
    let too_big = get_bearer(backend.addr, &hostile.last().unwrap().1).await;
    assert!(too_big.challenge().unwrap().contains("limit is 8192"));

    // Malformed requests: 400; no token: 401 without an error code.
    let token = format!("Bearer {good_es}");
    let reply = get(
        backend.addr,
        "/",
        &[("authorization", &token), ("authorization", &token)],
    )
    .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert!(reply.challenge().unwrap().contains("invalid_request"));
    let reply = get(backend.addr, "/", &[("authorization", "Bearer")]).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    for header in ["Basic YWxpY2U6c2VjcmV0", "Token abc", "Bearerabc"] {
        let reply = get(backend.addr, "/", &[("authorization", header)]).await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{header}");
        assert_eq!(reply.challenge(), Some("Bearer"));
    }
    let reply = get(backend.addr, "/", &[]).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert_eq!(reply.challenge(), Some("Bearer"));
    assert_eq!(backend.calls(), 0, "no hostile request reached the handler");

    // The good tokens still pass, so the refusals above were not blanket.
    assert_eq!(
        get_bearer(backend.addr, &good_es).await.status,
        StatusCode::OK
    );
    assert_eq!(
        get_bearer(backend.addr, &good_rs).await.status,
        StatusCode::OK
    );
    assert_eq!(backend.calls(), 2);

    // Nothing a token pointed at was fetched, and the unknown kids cost at
    // most one JWKS refresh (the cooldown holds the rest).
    assert_eq!(attacker_jwks.hits(), 0, "jku/x5u were fetched");
    assert!(jwks.hits() <= 2, "{} JWKS fetches", jwks.hits());
    assert!(
        jwks.seen()
            .iter()
            .all(|s| s.path == tower_jwt_signer::JWKS_PATH)
    );
}
