//! Every way a token fails to open at start: a typed error that names what
//! is missing or wrong, and never the PIN.

use std::os::unix::fs::PermissionsExt as _;

use tower_jwt_signer::pkcs11::{Pin, Pkcs11Error, Pkcs11Token};
use tower_jwt_signer::{Algorithm, StoreError};

use crate::support::softhsm::{PIN, TOKEN, isolated, write_private};
use crate::test_name;
use crate::util::open;

#[test]
fn a_wrong_pin_is_a_typed_error_at_start() {
    isolated(test_name!(), |hsm| {
        let err = Pkcs11Token::builder(&hsm.module, TOKEN)
            .pin(Pin::new("not-the-pin"))
            .open()
            .unwrap_err();
        assert!(
            matches!(&err, Pkcs11Error::WrongPin { token } if token == TOKEN),
            "{err}"
        );
        assert!(err.to_string().contains("wrong PIN"), "{err}");
        assert!(!err.to_string().contains("not-the-pin"), "{err}");
        assert!(!format!("{err:?}").contains("not-the-pin"), "{err:?}");
        // The right PIN, given as a value, opens it.
        Pkcs11Token::builder(&hsm.module, TOKEN)
            .pin(Pin::new(PIN))
            .open()
            .unwrap();
    });
}

#[test]
fn a_missing_module_is_a_typed_error_naming_it() {
    isolated(test_name!(), |hsm| {
        let missing = hsm.dir.join("no-such-module.so");
        let err = Pkcs11Token::builder(&missing, TOKEN)
            .pin_file(hsm.pin_file())
            .open()
            .unwrap_err();
        assert!(
            matches!(&err, Pkcs11Error::Module { path, .. } if *path == missing),
            "{err}"
        );
        assert!(err.to_string().contains("no-such-module.so"), "{err}");
        // A file that is not a PKCS#11 module.
        let garbage = hsm.dir.join("garbage.so");
        std::fs::write(&garbage, b"not a shared object").unwrap();
        let err = Pkcs11Token::builder(&garbage, TOKEN)
            .pin_file(hsm.pin_file())
            .open()
            .unwrap_err();
        assert!(matches!(&err, Pkcs11Error::Module { .. }), "{err}");
        assert!(err.to_string().contains("cannot load"), "{err}");
    });
}

#[test]
fn a_missing_token_label_is_a_typed_error_naming_the_labels_present() {
    isolated(test_name!(), |hsm| {
        let err = Pkcs11Token::builder(&hsm.module, "no-such-token")
            .pin_file(hsm.pin_file())
            .open()
            .unwrap_err();
        match &err {
            Pkcs11Error::TokenNotFound { label, present, .. } => {
                assert_eq!(label, "no-such-token");
                assert_eq!(present, &vec![TOKEN.to_owned()]);
            }
            other => panic!("not TokenNotFound: {other}"),
        }
        assert!(err.to_string().contains("no-such-token"), "{err}");
    });
}

#[test]
fn a_missing_key_is_a_typed_error_naming_its_label_or_id() {
    isolated(test_name!(), |hsm| {
        let token = open(hsm);
        let err = token.key("no-such-key", Algorithm::ES256).unwrap_err();
        assert!(
            matches!(&err, Pkcs11Error::KeyNotFound { token, key } if token == TOKEN && key.contains("no-such-key")),
            "{err}"
        );
        let err = token
            .key_by_id(&[0xde, 0xad], Algorithm::ES256)
            .unwrap_err();
        assert!(err.to_string().contains("dead"), "{err}");
        // A key of another kind than the algorithm needs.
        let ec = token.generate(Algorithm::ES256).unwrap();
        let err = token
            .key(ec.label().unwrap(), Algorithm::ES384)
            .unwrap_err();
        assert!(matches!(&err, Pkcs11Error::KeyMismatch { .. }), "{err}");
        assert!(err.to_string().contains("P-384"), "{err}");
        let err = token
            .key(ec.label().unwrap(), Algorithm::RS256)
            .unwrap_err();
        assert!(err.to_string().contains("an RSA key"), "{err}");
    });
}

#[test]
fn a_pin_file_is_checked_like_a_key_file() {
    isolated(test_name!(), |hsm| {
        let loose = hsm.dir.join("loose-pin");
        write_private(&loose, format!("{PIN}\n").as_bytes());
        std::fs::set_permissions(&loose, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = Pkcs11Token::builder(&hsm.module, TOKEN)
            .pin_file(&loose)
            .open()
            .unwrap_err();
        assert!(
            matches!(
                &err,
                Pkcs11Error::PinFile(StoreError::LoosePermissions { .. })
            ),
            "{err}"
        );
        assert!(!err.to_string().contains(PIN), "{err}");
        let err = Pkcs11Token::builder(&hsm.module, TOKEN)
            .pin_file(hsm.dir.join("missing-pin"))
            .open()
            .unwrap_err();
        assert!(err.to_string().contains("missing-pin"), "{err}");
        // No PIN at all, or both: settings refused before anything opens.
        let err = Pkcs11Token::builder(&hsm.module, TOKEN).open().unwrap_err();
        assert!(
            matches!(&err, Pkcs11Error::Config(config) if config.setting() == "pin"),
            "{err}"
        );
        let err = Pkcs11Token::builder(&hsm.module, TOKEN)
            .pin_file(hsm.pin_file())
            .sessions(0)
            .open()
            .unwrap_err();
        assert!(
            matches!(&err, Pkcs11Error::Config(config) if config.setting() == "sessions"),
            "{err}"
        );
    });
}
