//! [`Pkcs11Key`]: a key that never leaves its token, and how keys are
//! found, made and destroyed in the token.

use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};

use aws_lc_rs::digest;
use cryptoki::mechanism::eddsa::{EddsaParams, EddsaSignatureScheme};
use cryptoki::mechanism::rsa::{PkcsMgfType, PkcsPssParams};
use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::Session;

use super::Pkcs11Error;
use super::token::{Inner, Lease, Pkcs11Token};
use crate::keys::{
    Algorithm, EcCurve, KeyError, KeyFactory, KeyKind, KeyReference, Kid, PublicJwk, SignError,
    SigningBackend, spki,
};

/// The provider name of the references to keys in a PKCS#11 token.
pub(super) const PROVIDER: &str = "pkcs11";

/// The label of every key this crate makes in a token: this prefix, then
/// the key's kid.
pub(super) const LABEL_PREFIX: &str = "tower-jwt-signer:";

/// The length of the random `CKA_ID` of a key made in the token.
const ID_LEN: usize = 16;

/// A private key that never leaves its PKCS#11 token: it signs inside the
/// token, through the token's sessions. Its public JWK and kid come from
/// the token's public key object, by the code that gives an in-process
/// [`SigningKey`](crate::keys::SigningKey) its own: the same key has the same
/// RFC 7638 kid, in a token or not.
///
/// It [blocks](SigningBackend::blocks) (the signer signs on its own
/// threads by default) and gives a [`KeyReference`] (a registry on a key
/// store stores it, never key material). `Debug` shows the token, the key's
/// label and id, the kid and the algorithm. See the [module docs](super).
pub struct Pkcs11Key {
    token: Pkcs11Token,
    locator: Locator,
    scheme: Scheme,
    public: PublicJwk,
    reference: KeyReference,
    /// The private key's handle, with the connection it was found in.
    handle: Mutex<Option<(u64, ObjectHandle)>>,
}

/// How a key is found in the token: its label, its `CKA_ID`, or both.
#[derive(Clone, PartialEq, Eq)]
struct Locator {
    label: Option<String>,
    id: Vec<u8>,
}

impl Locator {
    fn template(&self, class: ObjectClass) -> Vec<Attribute> {
        let mut template = vec![Attribute::Class(class)];
        if let Some(label) = &self.label {
            template.push(Attribute::Label(label.as_bytes().to_vec()));
        }
        if !self.id.is_empty() {
            template.push(Attribute::Id(self.id.clone()));
        }
        template
    }
}

impl fmt::Display for Locator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.label, self.id.is_empty()) {
            (Some(label), true) => write!(f, "label {label:?}"),
            (Some(label), false) => write!(f, "label {label:?} and id {}", hex(&self.id)),
            (None, _) => write!(f, "id {}", hex(&self.id)),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Hash {
    Sha256,
    Sha384,
    Sha512,
}

impl Hash {
    fn len(self) -> usize {
        match self {
            Hash::Sha256 => 32,
            Hash::Sha384 => 48,
            Hash::Sha512 => 64,
        }
    }

    fn digest(self, data: &[u8]) -> Vec<u8> {
        let algorithm = match self {
            Hash::Sha256 => &digest::SHA256,
            Hash::Sha384 => &digest::SHA384,
            Hash::Sha512 => &digest::SHA512,
        };
        digest::digest(algorithm, data).as_ref().to_vec()
    }

    fn mechanism(self) -> MechanismType {
        match self {
            Hash::Sha256 => MechanismType::SHA256,
            Hash::Sha384 => MechanismType::SHA384,
            Hash::Sha512 => MechanismType::SHA512,
        }
    }

    fn mgf(self) -> PkcsMgfType {
        match self {
            Hash::Sha256 => PkcsMgfType::MGF1_SHA256,
            Hash::Sha384 => PkcsMgfType::MGF1_SHA384,
            Hash::Sha512 => PkcsMgfType::MGF1_SHA512,
        }
    }
}

/// The PKCS#11 mechanism of one algorithm, as the token offers it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scheme {
    /// `CKM_SHA*_RSA_PKCS`: RS256/384/512.
    Pkcs1(Hash),
    /// `CKM_SHA*_RSA_PKCS_PSS`, MGF1 with the same hash, salt as long as
    /// the hash: PS256/384/512 (RFC 7518 section 3.5).
    Pss(Hash),
    /// `CKM_ECDSA_SHA*` (`hashed_in_token`) or `CKM_ECDSA` over the digest
    /// computed here; the token returns `r || s`, each `len` bytes.
    Ecdsa {
        hash: Hash,
        hashed_in_token: bool,
        len: usize,
    },
    /// `CKM_EDDSA`, pure Ed25519.
    EdDsa,
}

impl Scheme {
    /// The mechanism `algorithm` takes on a token offering `offered`.
    fn choose(
        algorithm: Algorithm,
        offered: &[MechanismType],
        token: &str,
    ) -> Result<Self, Pkcs11Error> {
        let has = |mechanism: MechanismType| offered.contains(&mechanism);
        let unsupported = |mechanism| Pkcs11Error::MechanismUnsupported {
            token: token.to_owned(),
            algorithm,
            mechanism,
        };
        let hash = match algorithm {
            Algorithm::RS256 | Algorithm::PS256 | Algorithm::ES256 => Hash::Sha256,
            Algorithm::RS384 | Algorithm::PS384 | Algorithm::ES384 => Hash::Sha384,
            Algorithm::RS512 | Algorithm::PS512 | Algorithm::ES512 | Algorithm::EdDSA => {
                Hash::Sha512
            }
        };
        let (rsa, pss, ecdsa_hashed) = match hash {
            Hash::Sha256 => (
                (MechanismType::SHA256_RSA_PKCS, "CKM_SHA256_RSA_PKCS"),
                (
                    MechanismType::SHA256_RSA_PKCS_PSS,
                    "CKM_SHA256_RSA_PKCS_PSS",
                ),
                MechanismType::ECDSA_SHA256,
            ),
            Hash::Sha384 => (
                (MechanismType::SHA384_RSA_PKCS, "CKM_SHA384_RSA_PKCS"),
                (
                    MechanismType::SHA384_RSA_PKCS_PSS,
                    "CKM_SHA384_RSA_PKCS_PSS",
                ),
                MechanismType::ECDSA_SHA384,
            ),
            Hash::Sha512 => (
                (MechanismType::SHA512_RSA_PKCS, "CKM_SHA512_RSA_PKCS"),
                (
                    MechanismType::SHA512_RSA_PKCS_PSS,
                    "CKM_SHA512_RSA_PKCS_PSS",
                ),
                MechanismType::ECDSA_SHA512,
            ),
        };
        match algorithm.key_kind() {
            KeyKind::Rsa if algorithm.as_str().starts_with("PS") => {
                if has(pss.0) {
                    Ok(Scheme::Pss(hash))
                } else {
                    Err(unsupported(pss.1))
                }
            }
            KeyKind::Rsa => {
                if has(rsa.0) {
                    Ok(Scheme::Pkcs1(hash))
                } else {
                    Err(unsupported(rsa.1))
                }
            }
            KeyKind::Ec(curve) => {
                let len = curve.coordinate_len();
                if has(ecdsa_hashed) {
                    Ok(Scheme::Ecdsa {
                        hash,
                        hashed_in_token: true,
                        len,
                    })
                } else if has(MechanismType::ECDSA) {
                    Ok(Scheme::Ecdsa {
                        hash,
                        hashed_in_token: false,
                        len,
                    })
                } else {
                    Err(unsupported("CKM_ECDSA"))
                }
            }
            KeyKind::Ed25519 => {
                if has(MechanismType::EDDSA) {
                    Ok(Scheme::EdDsa)
                } else {
                    Err(unsupported("CKM_EDDSA"))
                }
            }
        }
    }

    /// Signs `input` with the private key `key`: the raw JWS signature.
    fn sign(
        self,
        session: &Session,
        key: ObjectHandle,
        input: &[u8],
    ) -> cryptoki::error::Result<Vec<u8>> {
        match self {
            Scheme::Pkcs1(hash) => {
                let mechanism = match hash {
                    Hash::Sha256 => Mechanism::Sha256RsaPkcs,
                    Hash::Sha384 => Mechanism::Sha384RsaPkcs,
                    Hash::Sha512 => Mechanism::Sha512RsaPkcs,
                };
                session.sign(&mechanism, key, input)
            }
            Scheme::Pss(hash) => {
                let params = PkcsPssParams {
                    hash_alg: hash.mechanism(),
                    mgf: hash.mgf(),
                    s_len: (hash.len() as u64).into(),
                };
                let mechanism = match hash {
                    Hash::Sha256 => Mechanism::Sha256RsaPkcsPss(params),
                    Hash::Sha384 => Mechanism::Sha384RsaPkcsPss(params),
                    Hash::Sha512 => Mechanism::Sha512RsaPkcsPss(params),
                };
                session.sign(&mechanism, key, input)
            }
            Scheme::Ecdsa {
                hash,
                hashed_in_token: true,
                ..
            } => {
                let mechanism = match hash {
                    Hash::Sha256 => Mechanism::EcdsaSha256,
                    Hash::Sha384 => Mechanism::EcdsaSha384,
                    Hash::Sha512 => Mechanism::EcdsaSha512,
                };
                session.sign(&mechanism, key, input)
            }
            Scheme::Ecdsa { hash, .. } => session.sign(&Mechanism::Ecdsa, key, &hash.digest(input)),
            Scheme::EdDsa => session.sign(
                &Mechanism::Eddsa(EddsaParams::new(EddsaSignatureScheme::Pure)),
                key,
                input,
            ),
        }
    }

    /// The length the signature must have, when fixed.
    fn signature_len(self) -> Option<usize> {
        match self {
            Scheme::Ecdsa { len, .. } => Some(2 * len),
            Scheme::EdDsa => Some(64),
            Scheme::Pkcs1(_) | Scheme::Pss(_) => None,
        }
    }
}

impl Pkcs11Token {
    /// The private key labelled `label` (`CKA_LABEL`), to sign with
    /// `algorithm`. Blocking.
    ///
    /// Its public key comes from the token's public key object with the
    /// same `CKA_ID` (or, without one, the same label); for RSA it may come
    /// from the private key object. The key must fit the algorithm (RSA of
    /// at least 2048 bits for RS*/PS*, the curve of ES256/384/512, Ed25519
    /// for EdDSA), and the token must offer the mechanism.
    ///
    /// # Errors
    ///
    /// [`Pkcs11Error::KeyNotFound`] naming the token and the label;
    /// [`Pkcs11Error::KeyMismatch`] (another type or curve, several keys
    /// with that label, no public key, a refused public key);
    /// [`Pkcs11Error::MechanismUnsupported`]; [`Pkcs11Error::Token`].
    pub fn key(&self, label: &str, algorithm: Algorithm) -> Result<Pkcs11Key, Pkcs11Error> {
        self.find(
            Locator {
                label: Some(label.to_owned()),
                id: Vec::new(),
            },
            algorithm,
            None,
            false,
        )
    }

    /// The private key whose `CKA_ID` is `id`, to sign with `algorithm`.
    /// Blocking. See [`key`](Self::key).
    ///
    /// # Errors
    ///
    /// As [`key`](Self::key).
    pub fn key_by_id(&self, id: &[u8], algorithm: Algorithm) -> Result<Pkcs11Key, Pkcs11Error> {
        if id.is_empty() {
            return Err(
                crate::error::ConfigError::without_value("id", "a key id is not empty").into(),
            );
        }
        self.find(
            Locator {
                label: None,
                id: id.to_vec(),
            },
            algorithm,
            None,
            false,
        )
    }

    /// Makes a new key pair for `algorithm` inside the token, and returns
    /// its private key. Blocking (RSA generation takes a while).
    ///
    /// The private key is a token object (`CKA_TOKEN`), private, sensitive
    /// and not extractable (`CKA_SENSITIVE` true, `CKA_EXTRACTABLE` false:
    /// the token never lets it out), for signing only; the public key is a
    /// token object too. Both get a random 16-byte `CKA_ID` and the label
    /// `tower-jwt-signer:<kid>`. RSA keys have the builder's
    /// [`rsa_bits`](super::Pkcs11TokenBuilder::rsa_bits) and exponent
    /// 65537.
    ///
    /// # Errors
    ///
    /// [`Pkcs11Error::MechanismUnsupported`] when the token cannot make or
    /// use such a key; [`Pkcs11Error::Token`] when it fails; nothing is
    /// left in the token then.
    pub fn generate(&self, algorithm: Algorithm) -> Result<Pkcs11Key, Pkcs11Error> {
        let inner = self.inner();
        let mut id = [0u8; ID_LEN];
        aws_lc_rs::rand::fill(&mut id).map_err(|_| Pkcs11Error::Token {
            token: inner.label().to_owned(),
            operation: "generate a key id",
            source: "the random generator failed".into(),
            connection: false,
        })?;
        let kid = inner.with_session("generate a key", |lease| {
            Scheme::choose(algorithm, lease.mechanisms(), inner.label())?;
            generate_pair(inner, lease, algorithm, &id)
        })?;
        self.find(
            Locator {
                label: Some(format!("{LABEL_PREFIX}{kid}")),
                id: id.to_vec(),
            },
            algorithm,
            None,
            true,
        )
    }

    /// Finds the key `locator` names and reads its public key.
    fn find(
        &self,
        locator: Locator,
        algorithm: Algorithm,
        kid: Option<Kid>,
        generated: bool,
    ) -> Result<Pkcs11Key, Pkcs11Error> {
        let inner = self.inner();
        let (scheme, public_der, handle) = inner.with_session("find a key", |lease| {
            let scheme = Scheme::choose(algorithm, lease.mechanisms(), inner.label())?;
            let session = lease.session();
            let private = find_one(inner, session, &locator, ObjectClass::PRIVATE_KEY)?
                .ok_or_else(|| Pkcs11Error::KeyNotFound {
                    token: inner.label().to_owned(),
                    key: locator.to_string(),
                })?;
            let public_der = public_key_der(inner, session, &locator, private, algorithm)?;
            Ok((scheme, public_der, (lease.generation(), private)))
        })?;
        let mismatch = |reason: String| Pkcs11Error::KeyMismatch {
            token: inner.label().to_owned(),
            key: locator.to_string(),
            reason,
        };
        let mut attributes = vec![
            ("module", inner.module_path().to_string_lossy().into_owned()),
            ("token", inner.label().to_owned()),
        ];
        if let Some(label) = &locator.label {
            attributes.push(("label", label.clone()));
        }
        if !locator.id.is_empty() {
            attributes.push(("id", hex(&locator.id)));
        }
        if generated {
            attributes.push(("generated", "true".to_owned()));
        }
        let reference = KeyReference::new(PROVIDER, attributes, &public_der, algorithm, kid)
            .map_err(|err| mismatch(format!("its public key is refused: {err}")))?;
        Ok(Pkcs11Key {
            token: self.clone(),
            locator,
            scheme,
            public: reference.public_jwk().clone(),
            reference,
            handle: Mutex::new(Some(handle)),
        })
    }

    /// Opens the key a stored reference names (see [`KeyFactory::open`]).
    fn open_reference(&self, reference: &KeyReference) -> Result<Option<Pkcs11Key>, Pkcs11Error> {
        if reference.provider() != PROVIDER {
            return Ok(None);
        }
        let inner = self.inner();
        let key_name = reference.to_string();
        let token = reference.attribute("token").unwrap_or_default();
        if token != inner.label() {
            return Err(Pkcs11Error::KeyMismatch {
                token: inner.label().to_owned(),
                key: key_name,
                reason: format!(
                    "the stored reference names token {token:?}; open that token to use this key"
                ),
            });
        }
        let module = inner.module_path().to_string_lossy();
        if let Some(stored) = reference.attribute("module")
            && stored != module
        {
            tracing::warn!(kid = %reference.kid(), stored, module = %module, "a stored key names another path of the PKCS#11 module than this token's; using this token's");
        }
        let id = match reference.attribute("id") {
            Some(id) => unhex(id).ok_or_else(|| Pkcs11Error::KeyMismatch {
                token: inner.label().to_owned(),
                key: key_name.clone(),
                reason: "the stored reference has an id that is not hex".to_owned(),
            })?,
            None => Vec::new(),
        };
        let locator = Locator {
            label: reference.attribute("label").map(str::to_owned),
            id,
        };
        if locator.label.is_none() && locator.id.is_empty() {
            return Err(Pkcs11Error::KeyMismatch {
                token: inner.label().to_owned(),
                key: key_name,
                reason: "the stored reference has neither a label nor an id".to_owned(),
            });
        }
        let generated = reference.attribute("generated") == Some("true");
        self.find(
            locator,
            reference.algorithm(),
            Some(reference.kid().clone()),
            generated,
        )
        .map(Some)
    }

    /// Destroys the objects of a key this crate made in the token (see
    /// [`KeyFactory::destroy`]); a key it did not make is left there.
    fn destroy_reference(&self, reference: &KeyReference) -> Result<(), Pkcs11Error> {
        if reference.provider() != PROVIDER || reference.attribute("token") != Some(self.label()) {
            return Ok(());
        }
        let expected_label = format!("{LABEL_PREFIX}{}", reference.kid());
        if reference.attribute("generated") != Some("true")
            || reference.attribute("label") != Some(expected_label.as_str())
        {
            tracing::info!(kid = %reference.kid(), key = %reference, "the key leaves the registry; it was not made by this crate, so it stays in the token");
            return Ok(());
        }
        let inner = self.inner();
        let locator = Locator {
            label: Some(expected_label),
            id: reference
                .attribute("id")
                .and_then(unhex)
                .unwrap_or_default(),
        };
        let destroyed = inner.with_session("destroy a key", |lease| {
            let session = lease.session();
            let mut count = 0;
            for class in [ObjectClass::PRIVATE_KEY, ObjectClass::PUBLIC_KEY] {
                let objects = session
                    .find_objects(&locator.template(class))
                    .map_err(|err| inner.error("find a key", err))?;
                for object in objects {
                    session
                        .destroy_object(object)
                        .map_err(|err| inner.error("destroy a key", err))?;
                    count += 1;
                }
            }
            Ok(count)
        })?;
        tracing::info!(kid = %reference.kid(), token = %inner.label(), objects = destroyed, "destroyed a retired key in the PKCS#11 token");
        Ok(())
    }
}

impl KeyFactory for Pkcs11Token {
    /// [`Pkcs11Token::generate`]: the key is made inside the token.
    fn generate(&self, algorithm: Algorithm) -> Result<Arc<dyn SigningBackend>, KeyError> {
        Ok(Arc::new(Pkcs11Token::generate(self, algorithm)?))
    }

    /// Opens a reference to a key of this token (provider `pkcs11`, this
    /// token's label): finds the key by its label and id. A reference to
    /// another provider is not this factory's (`Ok(None)`); one to another
    /// token is an error naming it.
    fn open(&self, reference: &KeyReference) -> Result<Option<Arc<dyn SigningBackend>>, KeyError> {
        Ok(self
            .open_reference(reference)?
            .map(|key| Arc::new(key) as Arc<dyn SigningBackend>))
    }

    /// Destroys the private and public key objects of a key this crate
    /// made in this token (its reference says `generated`, and its label is
    /// `tower-jwt-signer:<kid>`). Keys found by label or id (provisioned by
    /// hand) are left in the token.
    fn destroy(&self, reference: &KeyReference) -> Result<(), KeyError> {
        Ok(self.destroy_reference(reference)?)
    }
}

impl Pkcs11Key {
    /// The token the key is in.
    pub fn token(&self) -> &Pkcs11Token {
        &self.token
    }

    /// The key's label (`CKA_LABEL`), when it was found by label or made
    /// here.
    pub fn label(&self) -> Option<&str> {
        self.locator.label.as_deref()
    }

    /// The key's `CKA_ID` as the token holds it (empty when it was found by
    /// a label alone).
    pub fn id(&self) -> &[u8] {
        &self.locator.id
    }

    /// The key id.
    pub fn kid(&self) -> &Kid {
        self.public.kid()
    }

    /// The algorithm.
    pub fn algorithm(&self) -> Algorithm {
        self.public.algorithm()
    }

    /// The private key's handle in the connection of `lease`: cached, found
    /// again after the token's sessions were opened again.
    fn handle(&self, inner: &Inner, lease: &Lease<'_>) -> Result<ObjectHandle, Pkcs11Error> {
        let mut cached = self.handle.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((generation, handle)) = *cached
            && generation == lease.generation()
        {
            return Ok(handle);
        }
        let handle = find_one(
            inner,
            lease.session(),
            &self.locator,
            ObjectClass::PRIVATE_KEY,
        )?
        .ok_or_else(|| Pkcs11Error::KeyNotFound {
            token: inner.label().to_owned(),
            key: self.locator.to_string(),
        })?;
        *cached = Some((lease.generation(), handle));
        Ok(handle)
    }
}

impl SigningBackend for Pkcs11Key {
    fn public_jwk(&self) -> &PublicJwk {
        &self.public
    }

    fn sign(&self, signing_input: &[u8]) -> Result<Vec<u8>, SignError> {
        let inner = self.token.inner();
        let signature = inner
            .with_session("sign", |lease| {
                let handle = self.handle(inner, lease)?;
                self.scheme
                    .sign(lease.session(), handle, signing_input)
                    .map_err(|err| inner.error("sign", err))
            })
            .map_err(|err| SignError::Other(Box::new(err)))?;
        if let Some(len) = self.scheme.signature_len()
            && signature.len() != len
        {
            return Err(SignError::Other(
                format!(
                    "token {:?} returned a {}-byte signature for {}, not {len} bytes",
                    inner.label(),
                    signature.len(),
                    self.algorithm()
                )
                .into(),
            ));
        }
        Ok(signature)
    }

    fn blocks(&self) -> bool {
        true
    }

    fn reference(&self) -> Option<KeyReference> {
        Some(self.reference.clone())
    }
}

impl fmt::Debug for Pkcs11Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pkcs11Key")
            .field("token", &self.token.label())
            .field("label", &self.locator.label)
            .field("id", &hex(&self.locator.id))
            .field("kid", self.kid())
            .field("alg", &self.algorithm())
            .finish_non_exhaustive()
    }
}

/// The one object of `class` that `locator` names, if any.
fn find_one(
    inner: &Inner,
    session: &Session,
    locator: &Locator,
    class: ObjectClass,
) -> Result<Option<ObjectHandle>, Pkcs11Error> {
    let objects = session
        .find_objects(&locator.template(class))
        .map_err(|err| inner.error("find a key", err))?;
    match objects.as_slice() {
        [] => Ok(None),
        [one] => Ok(Some(*one)),
        more => Err(Pkcs11Error::KeyMismatch {
            token: inner.label().to_owned(),
            key: locator.to_string(),
            reason: format!(
                "{} {} match; give each key a label or id of its own",
                more.len(),
                if class == ObjectClass::PRIVATE_KEY {
                    "private keys"
                } else {
                    "public keys"
                }
            ),
        }),
    }
}

/// Reads `attributes` of `object`.
fn attributes(
    inner: &Inner,
    session: &Session,
    object: ObjectHandle,
    types: &[AttributeType],
) -> Result<Vec<Attribute>, Pkcs11Error> {
    session
        .get_attributes(object, types)
        .map_err(|err| inner.error("read a key's attributes", err))
}

/// The public key of the private key `private` as a DER
/// SubjectPublicKeyInfo, from the token's public key object (or, for RSA,
/// the private key object), after checking the key type and curve.
fn public_key_der(
    inner: &Inner,
    session: &Session,
    locator: &Locator,
    private: ObjectHandle,
    algorithm: Algorithm,
) -> Result<Vec<u8>, Pkcs11Error> {
    let mismatch = |reason: String| Pkcs11Error::KeyMismatch {
        token: inner.label().to_owned(),
        key: locator.to_string(),
        reason,
    };
    let found = attributes(
        inner,
        session,
        private,
        &[
            AttributeType::KeyType,
            AttributeType::Id,
            AttributeType::EcParams,
        ],
    )?;
    let mut key_type = None;
    let mut id = Vec::new();
    let mut params = None;
    for attribute in found {
        match attribute {
            Attribute::KeyType(found) => key_type = Some(found),
            Attribute::Id(found) => id = found,
            Attribute::EcParams(found) => params = Some(found),
            _ => {}
        }
    }
    let key_type = key_type.ok_or_else(|| mismatch("the token gives no key type".to_owned()))?;
    // The public key object: the one with the private key's id, or (without
    // an id) its label.
    let public_locator = if id.is_empty() {
        locator.clone()
    } else {
        Locator {
            label: None,
            id: id.clone(),
        }
    };
    let public = find_one(inner, session, &public_locator, ObjectClass::PUBLIC_KEY)?;
    let wrong = |found: String| {
        mismatch(format!(
            "it is {found}, and {algorithm} needs {}",
            match algorithm.key_kind() {
                KeyKind::Rsa => "an RSA key".to_owned(),
                KeyKind::Ec(curve) => format!("an EC key on {curve}"),
                _ => "an Ed25519 key".to_owned(),
            }
        ))
    };
    match algorithm.key_kind() {
        KeyKind::Rsa => {
            if key_type != KeyType::RSA {
                return Err(wrong(describe(key_type, params.as_deref())));
            }
            let object = public.unwrap_or(private);
            let mut n = None;
            let mut e = None;
            for attribute in attributes(
                inner,
                session,
                object,
                &[AttributeType::Modulus, AttributeType::PublicExponent],
            )? {
                match attribute {
                    Attribute::Modulus(found) => n = Some(found),
                    Attribute::PublicExponent(found) => e = Some(found),
                    _ => {}
                }
            }
            match (n, e) {
                (Some(n), Some(e)) => Ok(spki::rsa(&n, &e)),
                _ => Err(mismatch(
                    "the token gives no modulus and public exponent".to_owned(),
                )),
            }
        }
        KeyKind::Ec(curve) => {
            let on = params.as_deref().and_then(curve_of);
            if key_type != KeyType::EC || on != Some(Curve::Ec(curve)) {
                return Err(wrong(describe(key_type, params.as_deref())));
            }
            let point = ec_point(inner, session, public, &mismatch)?;
            let len = 1 + 2 * curve.coordinate_len();
            let point = match point.as_slice() {
                raw if raw.len() == len && raw[0] == 4 => raw.to_vec(),
                wrapped => spki::octet_string(wrapped)
                    .filter(|inside| inside.len() == len && inside[0] == 4)
                    .map(<[u8]>::to_vec)
                    .ok_or_else(|| {
                        mismatch(format!(
                            "its CKA_EC_POINT is not an uncompressed point on {curve}"
                        ))
                    })?,
            };
            Ok(spki::ec(curve, &point))
        }
        _ => {
            let on = params.as_deref().and_then(curve_of);
            if key_type != KeyType::EC_EDWARDS || on != Some(Curve::Ed25519) {
                return Err(wrong(describe(key_type, params.as_deref())));
            }
            let point = ec_point(inner, session, public, &mismatch)?;
            let x = match point.as_slice() {
                raw if raw.len() == 32 => raw.to_vec(),
                wrapped => spki::octet_string(wrapped)
                    .filter(|inside| inside.len() == 32)
                    .map(<[u8]>::to_vec)
                    .ok_or_else(|| {
                        mismatch("its CKA_EC_POINT is not an Ed25519 point".to_owned())
                    })?,
            };
            Ok(spki::ed25519(&x))
        }
    }
}

/// The `CKA_EC_POINT` of the public key object.
fn ec_point(
    inner: &Inner,
    session: &Session,
    public: Option<ObjectHandle>,
    mismatch: &dyn Fn(String) -> Pkcs11Error,
) -> Result<Vec<u8>, Pkcs11Error> {
    let public = public.ok_or_else(|| {
        mismatch(
            "the token has no public key object with its id or label, which holds the public point (import the public key too)"
                .to_owned(),
        )
    })?;
    attributes(inner, session, public, &[AttributeType::EcPoint])?
        .into_iter()
        .find_map(|attribute| match attribute {
            Attribute::EcPoint(point) => Some(point),
            _ => None,
        })
        .ok_or_else(|| mismatch("its public key object has no CKA_EC_POINT".to_owned()))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Curve {
    Ec(EcCurve),
    Ed25519,
}

/// The curve `CKA_EC_PARAMS` names: an OID, or (Edwards curves, PKCS#11
/// 3.0) the printable string `edwards25519`.
fn curve_of(params: &[u8]) -> Option<Curve> {
    [EcCurve::P256, EcCurve::P384, EcCurve::P521]
        .into_iter()
        .find(|&curve| params == spki::oid(spki::curve_oid(curve)))
        .map(Curve::Ec)
        .or_else(|| {
            (params == spki::oid(spki::ED25519) || params == spki::tlv(0x13, b"edwards25519"))
                .then_some(Curve::Ed25519)
        })
}

/// What a key of this type and parameters is, for an error message.
fn describe(key_type: KeyType, params: Option<&[u8]>) -> String {
    match (key_type, params.and_then(curve_of)) {
        (KeyType::RSA, _) => "an RSA key".to_owned(),
        (_, Some(Curve::Ec(curve))) => format!("an EC key on {curve}"),
        (_, Some(Curve::Ed25519)) => "an Ed25519 key".to_owned(),
        (other, _) => format!("a key of type {other}"),
    }
}

/// Makes a key pair in the token, labels both halves with the kid, and
/// returns the kid. On any failure after the pair exists, both halves are
/// destroyed again.
fn generate_pair(
    inner: &Inner,
    lease: &Lease<'_>,
    algorithm: Algorithm,
    id: &[u8],
) -> Result<Kid, Pkcs11Error> {
    let session = lease.session();
    let pending = format!("{LABEL_PREFIX}pending");
    let (mechanism, name, mut public, mut private) = match algorithm.key_kind() {
        KeyKind::Rsa => (
            Mechanism::RsaPkcsKeyPairGen,
            (
                MechanismType::RSA_PKCS_KEY_PAIR_GEN,
                "CKM_RSA_PKCS_KEY_PAIR_GEN",
            ),
            vec![
                Attribute::ModulusBits(u64::from(inner.rsa_bits).into()),
                Attribute::PublicExponent(vec![1, 0, 1]),
            ],
            vec![Attribute::Decrypt(false)],
        ),
        KeyKind::Ec(curve) => (
            Mechanism::EccKeyPairGen,
            (MechanismType::ECC_KEY_PAIR_GEN, "CKM_EC_KEY_PAIR_GEN"),
            vec![Attribute::EcParams(spki::oid(spki::curve_oid(curve)))],
            vec![Attribute::Derive(false)],
        ),
        _ => (
            Mechanism::EccEdwardsKeyPairGen,
            (
                MechanismType::ECC_EDWARDS_KEY_PAIR_GEN,
                "CKM_EC_EDWARDS_KEY_PAIR_GEN",
            ),
            vec![Attribute::EcParams(spki::oid(spki::ED25519))],
            vec![Attribute::Derive(false)],
        ),
    };
    if !lease.mechanisms().contains(&name.0) {
        return Err(Pkcs11Error::MechanismUnsupported {
            token: inner.label().to_owned(),
            algorithm,
            mechanism: name.1,
        });
    }
    public.extend([
        Attribute::Token(true),
        Attribute::Private(false),
        Attribute::Verify(true),
        Attribute::Id(id.to_vec()),
        Attribute::Label(pending.clone().into_bytes()),
    ]);
    private.extend([
        Attribute::Token(true),
        Attribute::Private(true),
        Attribute::Sensitive(true),
        Attribute::Extractable(false),
        Attribute::Sign(true),
        Attribute::Id(id.to_vec()),
        Attribute::Label(pending.into_bytes()),
    ]);
    let (public_handle, private_handle) = session
        .generate_key_pair(&mechanism, &public, &private)
        .map_err(|err| inner.error("generate a key", err))?;
    let labelled = (|| {
        let locator = Locator {
            label: None,
            id: id.to_vec(),
        };
        let der = public_key_der(inner, session, &locator, private_handle, algorithm)?;
        let kid = PublicJwk::from_spki_der(&der, algorithm, None)
            .map_err(|err| Pkcs11Error::KeyMismatch {
                token: inner.label().to_owned(),
                key: locator.to_string(),
                reason: format!("the token made a key that is refused: {err}"),
            })?
            .kid()
            .clone();
        let label = Attribute::Label(format!("{LABEL_PREFIX}{kid}").into_bytes());
        for object in [public_handle, private_handle] {
            session
                .update_attributes(object, std::slice::from_ref(&label))
                .map_err(|err| inner.error("label a key", err))?;
        }
        Ok(kid)
    })();
    if labelled.is_err() {
        for object in [private_handle, public_handle] {
            let _ = session.destroy_object(object);
        }
    }
    labelled
}

/// Lower-case hex.
pub(super) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// Bytes of lower- or upper-case hex; `None` for anything else.
pub(super) fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trips_and_refuses_garbage() {
        assert_eq!(hex(&[0, 0xab, 0x10]), "00ab10");
        assert_eq!(unhex("00ab10"), Some(vec![0, 0xab, 0x10]));
        assert_eq!(unhex("00AB"), Some(vec![0, 0xab]));
        assert_eq!(unhex("0"), None);
        assert_eq!(unhex("zz"), None);
        assert_eq!(unhex("+1"), None);
    }

    #[test]
    fn curves_are_read_from_their_oid_or_name() {
        assert_eq!(
            curve_of(&spki::oid(spki::curve_oid(EcCurve::P384))),
            Some(Curve::Ec(EcCurve::P384))
        );
        assert_eq!(curve_of(&spki::oid(spki::ED25519)), Some(Curve::Ed25519));
        assert_eq!(
            curve_of(&spki::tlv(0x13, b"edwards25519")),
            Some(Curve::Ed25519)
        );
        assert_eq!(curve_of(&[6, 1, 0]), None);
    }

    #[test]
    fn each_algorithm_takes_its_mechanism_and_hashes_in_the_token_when_it_can() {
        let all = [
            MechanismType::SHA256_RSA_PKCS,
            MechanismType::SHA384_RSA_PKCS_PSS,
            MechanismType::ECDSA,
            MechanismType::EDDSA,
        ];
        assert_eq!(
            Scheme::choose(Algorithm::RS256, &all, "t").unwrap(),
            Scheme::Pkcs1(Hash::Sha256)
        );
        assert_eq!(
            Scheme::choose(Algorithm::PS384, &all, "t").unwrap(),
            Scheme::Pss(Hash::Sha384)
        );
        assert_eq!(
            Scheme::choose(Algorithm::ES512, &all, "t").unwrap(),
            Scheme::Ecdsa {
                hash: Hash::Sha512,
                hashed_in_token: false,
                len: 66
            }
        );
        assert_eq!(
            Scheme::choose(
                Algorithm::ES256,
                &[MechanismType::ECDSA, MechanismType::ECDSA_SHA256],
                "t"
            )
            .unwrap(),
            Scheme::Ecdsa {
                hash: Hash::Sha256,
                hashed_in_token: true,
                len: 32
            }
        );
        let err = Scheme::choose(Algorithm::PS256, &all, "t").unwrap_err();
        assert!(err.to_string().contains("CKM_SHA256_RSA_PKCS_PSS"), "{err}");
    }
}
