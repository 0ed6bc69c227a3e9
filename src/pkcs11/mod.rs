//! Keys that never leave a PKCS#11 token (an HSM, a cloud HSM, a YubiHSM,
//! SoftHSM2): feature `pkcs11`.
//!
//! A [`Pkcs11Token`] opens a PKCS#11 module (a `.so`), finds a token by its
//! label and logs in with the user [`Pin`] (read from a file checked like a
//! key file, or given as a secret value that is never logged). A
//! [`Pkcs11Key`] is a private key inside the token: it signs there, and this
//! process never holds it. It is a [`SigningBackend`], so it goes wherever
//! a [`SigningKey`](crate::keys::SigningKey) goes: into a
//! [`KeyRegistry`](crate::registry::KeyRegistry), behind a
//! [`JwtSignerLayer`](crate::signer::JwtSignerLayer).
//!
//! | algorithm | mechanism | signature |
//! |---|---|---|
//! | RS256/384/512 | `CKM_SHA256_RSA_PKCS`, `CKM_SHA384_…`, `CKM_SHA512_…` | as the token gives it |
//! | PS256/384/512 | `CKM_SHA256_RSA_PKCS_PSS`, … with MGF1 of the same hash and a salt as long as the hash | as the token gives it |
//! | ES256/384/512 | `CKM_ECDSA_SHA256`, … when the token offers them, else `CKM_ECDSA` over the SHA-2 digest computed here | `r ‖ s`, checked to be 64, 96 or 132 bytes |
//! | EdDSA | `CKM_EDDSA` (pure Ed25519) | 64 bytes |
//!
//! The key's public JWK and kid come from the token's public key object
//! (`CKA_MODULUS` and `CKA_PUBLIC_EXPONENT`, or `CKA_EC_POINT`) through
//! [`PublicJwk::from_spki_der`](crate::keys::PublicJwk::from_spki_der): the
//! same checks as a key held in this process, and the same RFC 7638 kid as
//! the same public key has as a [`SigningKey`](crate::keys::SigningKey).
//!
//! # Signing off the async workers
//!
//! A PKCS#11 call blocks until the token answers. A [`Pkcs11Key`]
//! [blocks](crate::keys::SigningBackend::blocks), so the signer's default
//! [`Offload::Auto`](crate::signer::Offload::Auto) signs with it on the
//! signer's own threads, whatever the algorithm. A PKCS#11 session serves
//! one thread at a time: the token keeps a pool of logged-in sessions, one
//! per signing thread ([`Pkcs11TokenBuilder::sessions`]).
//!
//! # Faults fail closed
//!
//! * At start, [`Pkcs11TokenBuilder::open`] fails with a typed
//!   [`Pkcs11Error`] naming what is wrong: the module
//!   ([`Module`](Pkcs11Error::Module)), the token label
//!   ([`TokenNotFound`](Pkcs11Error::TokenNotFound), with the labels
//!   present), the PIN ([`WrongPin`](Pkcs11Error::WrongPin)); finding a key,
//!   [`KeyNotFound`](Pkcs11Error::KeyNotFound) with the label or id.
//! * At run time, a token that was removed, a session that was closed or a
//!   login that was lost (`CKR_USER_NOT_LOGGED_IN`) fails that signature:
//!   the request is answered `500 signing_failed` and never forwarded
//!   unsigned, and a `tracing` error names the token. The next signature
//!   finds the token again, opens new sessions and logs in again.
//!
//! # Keys made and rotated inside the token
//!
//! [`Pkcs11Token::generate`] makes a key pair inside the token: a private
//! key that is sensitive and not extractable (`CKA_SENSITIVE` true,
//! `CKA_EXTRACTABLE` false), a token object (`CKA_TOKEN` true), labelled
//! `tower-jwt-signer:<kid>`. The token is also a
//! [`KeyFactory`](crate::keys::KeyFactory): give it to
//! [`KeyRegistryBuilder::key_factory`](crate::registry::KeyRegistryBuilder::key_factory)
//! and the registry's first key, the [`KeyRotator`](crate::rotation::KeyRotator)'s
//! next keys and [`KeyRegistry::rotate`](crate::registry::KeyRegistry::rotate)'s are
//! made in the token, with the same prepublish and retain rules as keys
//! held in this process; a retired key's objects are destroyed in the token
//! once it leaves the JWKS. With a [store](crate::store), each key is kept
//! as a [`KeyReference`](crate::keys::KeyReference) (module, token label,
//! key label and id, public key; never key material), and a restart finds
//! the same keys in the token with the same kids.
//!
//! Keys found with [`Pkcs11Token::key`] or [`key_by_id`](Pkcs11Token::key_by_id)
//! (provisioned by hand) are never destroyed: when they leave the
//! registry, they stay in the token.
//!
//! # Example
//!
//! ```no_run
//! use std::time::Duration;
//! use tower_jwt_signer::pkcs11::Pkcs11Token;
//! use tower_jwt_signer::{
//!     Algorithm, DirKeyStore, JwtSignerLayer, KeyRegistry, KeyRotator, RotationPolicy,
//! };
//!
//! # #[tokio::main]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // The token labelled "gateway", logged in with the PIN in a 0600 file.
//! let token = Pkcs11Token::builder("/usr/lib/softhsm/libsofthsm2.so", "gateway")
//!     .pin_file("/etc/gateway/token-pin")
//!     .open()?;
//!
//! // Keys made in the token; the directory keeps references to them.
//! let registry = KeyRegistry::builder()
//!     .store(DirKeyStore::open("/var/lib/gateway/keys")?)
//!     .key_factory(token.clone())
//!     .generate_if_missing(Algorithm::ES256)
//!     .build()?;
//!
//! // Rotated inside the token every day.
//! let policy = RotationPolicy::builder(Duration::from_secs(24 * 3600)).build()?;
//! let rotator = KeyRotator::spawn(registry.clone(), policy)?;
//!
//! let signer = JwtSignerLayer::builder(registry).issuer("https://gateway.example").build()?;
//! # drop((signer, rotator));
//!
//! // Or sign with a key provisioned by hand.
//! let key = token.key("signing-key", Algorithm::PS256)?;
//! let registry = KeyRegistry::new(key);
//! # drop(registry);
//! # Ok(())
//! # }
//! ```
//!
//! # What the token protects, and what it does not
//!
//! The private key: it is made in the token and cannot be read out of it
//! (the token refuses `CKA_VALUE` and `CKA_PRIVATE_EXPONENT`). Not the
//! right to sign: a process logged in to the token signs whatever it
//! likes, so the PIN (and the PIN file) is as sensitive as a key file was,
//! and so is the running process. See `SECURITY.md`.
//!
//! [`SigningBackend`]: crate::keys::SigningBackend
//! [`SigningBackend::blocks`]: crate::keys::SigningBackend::blocks

mod error;
mod key;
mod pin;
mod token;

pub use error::Pkcs11Error;
pub use key::Pkcs11Key;
pub use pin::{Pin, PinFileBuilder};
pub use token::{Pkcs11Token, Pkcs11TokenBuilder};
