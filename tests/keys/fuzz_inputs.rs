//! The fuzz targets' checks (`tests/support/fuzz`), run by `cargo test`
//! on proptest inputs: mutations of valid tokens, JWK Sets, templates, keys
//! and key files, plus arbitrary bytes, and every committed seed in
//! `fuzz/seeds/`. See `fuzz/README.md` for the fuzzers themselves.

use std::path::Path;
use std::time::UNIX_EPOCH;

use proptest::prelude::*;
use serde_json::{Map, Value, json};
use tower_jwt_signer::registry::KeyState;
use tower_jwt_signer::store::{KeyStore as _, StoredKey};
use tower_jwt_signer::{Algorithm, DirKeyStore};

use crate::support::fuzz::{AUDIENCE, ISSUER, NOW, fixture};

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        // The checks are deterministic: a failure shrinks to its input.
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Structured input for `verify_token`: `mode header 0 payload [0 tamper]`.
fn structured(mode: u8, header: &Value, payload: &Value, tamper: Option<[u8; 2]>) -> Vec<u8> {
    let mut data = vec![mode | 1];
    data.extend(serde_json::to_vec(header).unwrap());
    data.push(0);
    data.extend(serde_json::to_vec(payload).unwrap());
    if let Some(tamper) = tamper {
        data.push(0);
        data.extend(tamper);
    }
    data
}

/// Edits that turn a value into a hostile one.
fn json_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        "[ -~]{0,12}".prop_map(Value::from),
        Just(json!([])),
        Just(json!({})),
        Just(Value::from("A".repeat(300))),
    ]
}

fn header_strategy() -> impl Strategy<Value = (u8, Value)> {
    let fx = fixture();
    let kids: Vec<Value> = fx
        .keys
        .iter()
        .map(|k| Value::from(k.kid().as_str()))
        .chain([Value::from(""), Value::from("unknown"), Value::from(7)])
        .collect();
    let algs: Vec<Value> = Algorithm::ALL
        .iter()
        .map(|a| Value::from(a.as_str()))
        .chain(["none", "None", "HS256", "es256", ""].map(Value::from))
        .collect();
    (
        0u8..5,
        prop::sample::select(algs),
        prop::option::weighted(0.9, prop::sample::select(kids)),
        prop::option::weighted(
            0.9,
            prop::sample::select(vec![
                Value::from("JWT"),
                Value::from("jwt"),
                Value::from("application/JWT"),
                Value::from("at+jwt"),
                Value::from(1),
            ]),
        ),
        prop::option::weighted(0.1, json_value()),
        prop::option::weighted(0.1, json_value()),
        any::<bool>(),
    )
        .prop_map(move |(key, alg, kid, typ, crit, jku, honest)| {
            let signer = &fixture().keys[usize::from(key)];
            let mut header = Map::new();
            if honest {
                // Most tokens are well formed, so the claims get checked.
                header.insert("alg".into(), signer.algorithm().as_str().into());
                header.insert("kid".into(), signer.kid().as_str().into());
                header.insert("typ".into(), "JWT".into());
            } else {
                header.insert("alg".into(), alg);
                if let Some(kid) = kid {
                    header.insert("kid".into(), kid);
                }
                if let Some(typ) = typ {
                    header.insert("typ".into(), typ);
                }
            }
            if let Some(crit) = crit {
                header.insert("crit".into(), crit);
            }
            if let Some(jku) = jku {
                header.insert("jku".into(), jku);
            }
            (key << 1, Value::Object(header))
        })
}

fn claims_strategy() -> impl Strategy<Value = Value> {
    let now = NOW as i64;
    let time = prop_oneof![
        (-120i64..120).prop_map(move |d| Value::from(now + d)),
        (-120.0f64..120.0).prop_map(move |d| Value::from(now as f64 + d)),
        json_value(),
    ];
    (
        prop::option::weighted(0.9, time.clone()),
        prop::option::weighted(0.5, time.clone()),
        prop::option::weighted(0.5, time),
        prop::option::weighted(
            0.9,
            prop::sample::select(vec![
                Value::from(ISSUER),
                Value::from("https://evil"),
                Value::from(1),
            ]),
        ),
        prop::option::weighted(
            0.9,
            prop::sample::select(vec![
                Value::from(AUDIENCE),
                json!(["x", AUDIENCE]),
                json!(["x"]),
                Value::from("other"),
                json!([1]),
            ]),
        ),
        prop::option::of(json_value()),
    )
        .prop_map(|(exp, nbf, iat, iss, aud, extra)| {
            let mut claims = Map::new();
            for (name, value) in [
                ("exp", exp),
                ("nbf", nbf),
                ("iat", iat),
                ("iss", iss),
                ("aud", aud),
                ("extra", extra),
            ] {
                if let Some(value) = value {
                    claims.insert(name.into(), value);
                }
            }
            Value::Object(claims)
        })
}

/// Byte edits: flip, insert, delete or truncate at fuzzed positions.
fn mutate(mut data: Vec<u8>, edits: &[(u16, u8, u8)]) -> Vec<u8> {
    for &(at, byte, op) in edits {
        if data.is_empty() {
            data.push(byte);
            continue;
        }
        let at = usize::from(at) % data.len();
        match op % 4 {
            0 => data[at] ^= byte.max(1),
            1 => data.insert(at, byte),
            2 => {
                data.remove(at);
            }
            _ => data.truncate(at),
        }
    }
    data
}

fn edits() -> impl Strategy<Value = Vec<(u16, u8, u8)>> {
    prop::collection::vec(any::<(u16, u8, u8)>(), 0..4)
}

proptest! {
    #![proptest_config(config(160))]

    #[test]
    fn verify_token_structured(
        (mode, header) in header_strategy(),
        claims in claims_strategy(),
        tamper in prop::option::weighted(0.2, any::<[u8; 2]>()),
    ) {
        crate::support::fuzz::verify_token(&structured(mode, &header, &claims, tamper));
    }

    #[test]
    fn verify_token_raw_mutations(key in 0usize..5, edits in edits()) {
        let key = &fixture().keys[key];
        let header = json!({"alg": key.algorithm().as_str(), "kid": key.kid().as_str(), "typ": "JWT"});
        let claims = json!({"exp": NOW + 60, "iss": ISSUER, "aud": AUDIENCE});
        let token = crate::support::fuzz::sign_compact(
            key,
            header.to_string().as_bytes(),
            claims.to_string().as_bytes(),
        );
        let mut data = vec![0];
        data.extend(mutate(token.into_bytes(), &edits));
        crate::support::fuzz::verify_token(&data);
    }

    #[test]
    fn verify_token_arbitrary(data in prop::collection::vec(any::<u8>(), 0..300)) {
        crate::support::fuzz::verify_token(&data);
    }
}

/// A fixture key's public JWK with an edit applied.
fn edited_jwk(key: usize, edit: u8, member: usize, value: Value) -> Value {
    let mut jwk = fixture().keys[key].public_jwk().to_value();
    let map = jwk.as_object_mut().unwrap();
    let names: Vec<String> = map.keys().cloned().collect();
    let name = names[member % names.len()].clone();
    match edit % 6 {
        0 => {}
        1 => {
            map.remove(&name);
        }
        2 => {
            map.insert(name, value);
        }
        3 => {
            let private = crate::support::fuzz::PRIVATE_MEMBERS[member % 8];
            map.insert(private.into(), "c2VjcmV0".into());
        }
        4 => {
            map.insert("alg".into(), Algorithm::ALL[member % 10].as_str().into());
        }
        _ => {
            map.insert(["use", "key_ops", "crv", "kty"][member % 4].into(), value);
        }
    }
    jwk
}

proptest! {
    #![proptest_config(config(96))]

    #[test]
    fn jwk_set_edits(
        entries in prop::collection::vec((0usize..5, any::<u8>(), any::<usize>(), json_value()), 0..4),
        duplicate in any::<bool>(),
        wrap in any::<bool>(),
    ) {
        let mut keys: Vec<Value> = entries
            .into_iter()
            .map(|(key, edit, member, value)| edited_jwk(key, edit, member, value))
            .collect();
        if duplicate && let Some(first) = keys.first().cloned() {
            keys.push(first);
        }
        let data = if wrap && keys.len() == 1 {
            let mut data = vec![1];
            data.extend(serde_json::to_vec(&keys[0]).unwrap());
            data
        } else {
            let mut data = vec![0];
            data.extend(serde_json::to_vec(&json!({"keys": keys})).unwrap());
            data
        };
        crate::support::fuzz::jwk_set(&data);
    }

    #[test]
    fn jwk_set_mutations(key in 0usize..5, edits in edits()) {
        let set = json!({"keys": [fixture().keys[key].public_jwk().to_value()]});
        let mut data = vec![0];
        data.extend(mutate(serde_json::to_vec(&set).unwrap(), &edits));
        crate::support::fuzz::jwk_set(&data);
    }

    #[test]
    fn jwk_set_arbitrary(data in prop::collection::vec(any::<u8>(), 0..200)) {
        crate::support::fuzz::jwk_set(&data);
    }
}

/// Header and query bytes with everything that has broken templating
/// elsewhere: quotes, backslashes, CR/LF (percent-encoded in a URI),
/// control characters, non-UTF-8 bytes and long values.
fn hostile_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(
            prop::sample::select(b"a0\"\\{}$:,\t %+=&\x7f\x80\xc3\xa9\xff".to_vec()),
            0..24,
        ),
        Just(b"\",\"iss\":\"evil".to_vec()),
        Just(b"%22%2C%22iss%22%3A%22evil%0D%0AX: y".to_vec()),
        Just(vec![b'x'; 2000]),
        Just(b"12".to_vec()),
        Just(b"-0.5e2".to_vec()),
        Just(b"true".to_vec()),
    ]
}

fn uri_strategy() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        Just(b"/".to_vec()),
        Just(b"http://h.example:8080/p?q=1".to_vec()),
        Just(b"/p/%2e%2e/x?q=%22%0D%0A&q=2".to_vec()),
        Just(b"/?q=true".to_vec()),
        Just(b"/?q=+7".to_vec()),
        Just(b"*".to_vec()),
        hostile_bytes().prop_map(|q| {
            let mut uri = b"/a?q=".to_vec();
            uri.extend(q);
            uri
        }),
    ]
}

proptest! {
    #![proptest_config(config(128))]

    #[test]
    fn claim_template_inputs(
        mode in any::<u8>(),
        spec in prop_oneof![
            prop::collection::vec(prop_oneof![1u8..=10, Just(b'$'), Just(b'{'), Just(b'}'), Just(b'"'), 0x20u8..0x7f, 0x80u8..=0xff], 0..12),
            prop::sample::select(vec![
                b"${req.headers.x-a}".to_vec(),
                b"${number:req.query.q:1}".to_vec(),
                b"${boolean:req.headers.x-a}".to_vec(),
                b"pre-${req.path}-${req.host:none}$${x}".to_vec(),
                b"${req.headers.\"bad}".to_vec(),
                b"${number:req.path} tail".to_vec(),
                b"${req.query.}".to_vec(),
                b"${unterminated".to_vec(),
            ]),
        ],
        header_a in hostile_bytes(),
        header_a2 in hostile_bytes(),
        uri in uri_strategy(),
        host in hostile_bytes(),
    ) {
        let spec: Vec<u8> = spec.into_iter().filter(|b| *b != 0).collect();
        let mut data = vec![mode];
        for (i, part) in [spec, header_a, header_a2, uri, host].into_iter().enumerate() {
            if i > 0 {
                data.push(0);
            }
            data.extend(part.into_iter().filter(|b| *b != 0));
        }
        crate::support::fuzz::claim_template(&data);
    }

    #[test]
    fn claim_template_arbitrary(data in prop::collection::vec(any::<u8>(), 0..120)) {
        crate::support::fuzz::claim_template(&data);
    }
}

/// The PEM, DER and JWK exports of a fixture key, for `key_import`.
fn key_encodings(key: usize) -> [(u8, Vec<u8>); 3] {
    let key = &fixture().keys[key];
    [
        (0, key.to_pkcs8_pem().unwrap().into_bytes()),
        (1, key.to_pkcs8_der().unwrap()),
        (2, key.to_private_jwk().unwrap().into_bytes()),
    ]
}

fn alg_index(alg: Algorithm) -> u8 {
    Algorithm::ALL.iter().position(|a| *a == alg).unwrap() as u8
}

proptest! {
    #![proptest_config(config(48))]

    #[test]
    fn key_import_mutations(
        key in 0usize..5,
        form in 0usize..3,
        alg_shift in prop::option::weighted(0.2, 1u8..10),
        no_alg in any::<bool>(),
        edits in edits(),
    ) {
        let (mode, body) = key_encodings(key)[form].clone();
        let mode = if mode == 2 && no_alg { 3 } else { mode };
        let alg = alg_index(fixture().keys[key].algorithm()) + alg_shift.unwrap_or(0);
        let mut data = vec![mode, alg];
        data.extend(mutate(body, &edits));
        crate::support::fuzz::key_import(&data);
    }

    #[test]
    fn key_import_jwk_edits(key in 0usize..5, member in any::<usize>(), value in json_value()) {
        let jwk: Value = serde_json::from_str(&fixture().keys[key].to_private_jwk().unwrap()).unwrap();
        let mut map = jwk.as_object().unwrap().clone();
        let names: Vec<String> = map.keys().cloned().collect();
        map.insert(names[member % names.len()].clone(), value);
        let mut data = vec![3, 0];
        data.extend(serde_json::to_vec(&map).unwrap());
        crate::support::fuzz::key_import(&data);
    }

    #[test]
    fn key_import_arbitrary(data in prop::collection::vec(any::<u8>(), 0..200)) {
        crate::support::fuzz::key_import(&data);
    }
}

/// A valid key file for a fixture key, as `DirKeyStore` writes it.
fn key_file_bytes(key: usize, state: KeyState) -> Vec<u8> {
    let tmp = tempfile::tempdir().unwrap();
    let store = DirKeyStore::open(tmp.path().join("k")).unwrap();
    let key = fixture().keys[key].clone();
    let path = store.key_path(key.kid()).unwrap();
    let created = UNIX_EPOCH + std::time::Duration::from_secs(NOW - 100);
    store
        .save(&StoredKey::new(key, state, created).with_activated_at(Some(created)))
        .unwrap();
    std::fs::read(path).unwrap()
}

fn scratch() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

proptest! {
    #![proptest_config(config(48))]

    #[test]
    fn key_file_edits(
        key in 0usize..3,
        state in prop::sample::select(vec![KeyState::Active, KeyState::Next, KeyState::Retiring]),
        member in prop::sample::select(vec![
            "version", "kid", "state", "created_at", "activated_at", "activates_at",
            "retires_at", "private_jwk", "extra",
        ]),
        value in prop_oneof![
            json_value(),
            Just(Value::from(u64::MAX)),
            Just(Value::from(NOW - 1)),
            Just(Value::from(NOW + 1)),
            Just(Value::from("retiring")),
            Just(Value::from("next")),
        ],
        remove in any::<bool>(),
    ) {
        let mut file: Map<String, Value> = serde_json::from_slice(&key_file_bytes(key, state)).unwrap();
        if remove {
            file.remove(member);
        } else {
            file.insert(member.into(), value);
        }
        let dir = scratch();
        crate::support::fuzz::key_file(dir.path(), &serde_json::to_vec(&file).unwrap());
    }

    #[test]
    fn key_file_mutations(key in 0usize..3, edits in edits()) {
        let dir = scratch();
        crate::support::fuzz::key_file(dir.path(), &mutate(key_file_bytes(key, KeyState::Active), &edits));
    }

    #[test]
    fn key_file_arbitrary(data in prop::collection::vec(any::<u8>(), 0..120)) {
        let dir = scratch();
        crate::support::fuzz::key_file(dir.path(), &data);
    }
}

/// Every committed seed and every regression input under `fuzz/seeds/`
/// passes its target's checks.
#[test]
fn committed_seeds_pass() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds");
    let mut count = 0;
    let dir = scratch();
    for (target, check) in [
        (
            "verify_token",
            crate::support::fuzz::verify_token as fn(&[u8]),
        ),
        ("jwk_set", crate::support::fuzz::jwk_set),
        ("claim_template", crate::support::fuzz::claim_template),
        ("key_import", crate::support::fuzz::key_import),
    ] {
        for entry in std::fs::read_dir(root.join(target)).unwrap() {
            check(&std::fs::read(entry.unwrap().path()).unwrap());
            count += 1;
        }
    }
    for entry in std::fs::read_dir(root.join("key_file")).unwrap() {
        crate::support::fuzz::key_file(dir.path(), &std::fs::read(entry.unwrap().path()).unwrap());
        count += 1;
    }
    assert!(count >= 10, "only {count} seeds");
    // The token seeds were signed by the committed fixture keys at NOW:
    // they still verify, so the fuzzer starts from accepted tokens.
    let fx = fixture();
    for seed in ["token-es256", "token-eddsa"] {
        let data = std::fs::read(root.join("verify_token").join(seed)).unwrap();
        let token = std::str::from_utf8(&data[1..]).unwrap();
        fx.verifier.verify_with(token, &fx.set).unwrap();
    }
}

/// The structured modes reach their deep paths: a well-formed token is
/// accepted, a tampered one refused; a template renders; a key file loads.
/// (Guards the harness itself against checks that pass by never getting
/// anywhere.)
#[test]
fn harness_reaches_the_deep_paths() {
    let fx = fixture();
    for (index, key) in fx.keys.iter().enumerate() {
        let header =
            json!({"alg": key.algorithm().as_str(), "kid": key.kid().as_str(), "typ": "JWT"});
        let claims = json!({"aud": AUDIENCE, "exp": NOW + 60, "iss": ISSUER});
        let mode = (index as u8) << 1;
        let good = structured(mode, &header, &claims, None);
        let bad = structured(mode, &header, &claims, Some([3, 0x40]));
        // verify_token panics when the verdict differs from the rules, so
        // these two runs check acceptance and refusal.
        crate::support::fuzz::verify_token(&good);
        crate::support::fuzz::verify_token(&bad);
        let token = crate::support::fuzz::sign_compact(
            key,
            header.to_string().as_bytes(),
            claims.to_string().as_bytes(),
        );
        fx.verifier.verify_with(&token, &fx.set).unwrap();
    }
    let dir = scratch();
    let file = key_file_bytes(0, KeyState::Active);
    crate::support::fuzz::key_file(dir.path(), &file);
    let store = DirKeyStore::builder(dir.path())
        .create(false)
        .open()
        .unwrap();
    assert_eq!(store.load().unwrap().len(), 1);
    // A header value and a query value render into the claim: the check
    // panics if the request is refused while its values are there.
    let mut data = vec![1, 1, b'-', 3, 0];
    data.extend(b"abc\",\"iss\":\"x");
    data.extend(b"\0\0/p?q=%0D%0A\0h.example");
    crate::support::fuzz::claim_template(&data);
}
