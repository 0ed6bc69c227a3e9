//! [`Pkcs11Token`]: one token of a PKCS#11 module, logged in, with its pool
//! of sessions; the module itself, loaded and initialised once per process.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::MechanismType;
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;

use super::Pin;
use super::error::Pkcs11Error;
use crate::error::ConfigError;

/// How long a caller waits for a free session before giving up.
const SESSION_WAIT: Duration = Duration::from_secs(10);

/// The RSA sizes a token may generate.
const RSA_BITS: [u32; 3] = [2048, 3072, 4096];

/// The modules this process has loaded and initialised, by canonical path.
/// `C_Initialize` is once per process and module: every token of a module
/// shares its context, and a module stays loaded for the life of the
/// process.
static MODULES: OnceLock<Mutex<HashMap<PathBuf, Pkcs11>>> = OnceLock::new();

/// Loads and initialises the module at `path`, once per process.
fn load_module(path: &Path) -> Result<Pkcs11, Pkcs11Error> {
    let module_error = |reason: String| Pkcs11Error::Module {
        path: path.to_path_buf(),
        reason,
    };
    let canonical = std::fs::canonicalize(path)
        .map_err(|err| module_error(format!("cannot find the module: {err}")))?;
    let mut modules = MODULES
        .get_or_init(Mutex::default)
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    if let Some(module) = modules.get(&canonical) {
        return Ok(module.clone());
    }
    let module = Pkcs11::new(&canonical)
        .map_err(|err| module_error(format!("cannot load the module: {err}")))?;
    match module.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        // Another library of this process initialised it first.
        Ok(()) | Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
        Err(err) => return Err(module_error(format!("C_Initialize failed: {err}"))),
    }
    modules.insert(canonical, module.clone());
    Ok(module)
}

/// One token of a PKCS#11 module, found by its label and logged in with
/// the user PIN: it signs with the keys it holds
/// ([`key`](Self::key), [`key_by_id`](Self::key_by_id)), makes new ones
/// inside it ([`generate`](Self::generate)), and is a
/// [`KeyFactory`](crate::keys::KeyFactory) for a registry whose keys live
/// in the token. See the [module docs](super).
///
/// Cloning is cheap; clones share the sessions.
///
/// # Sessions
///
/// A PKCS#11 session is used by one thread at a time. The token keeps a
/// small pool of logged-in sessions, as many as the signer has signing
/// threads (one per core, at most 16) unless told another number
/// ([`sessions`](Pkcs11TokenBuilder::sessions)); a signature takes one for
/// its duration and gives it back. When the token reports that the
/// sessions or the login are gone (a session closed, `CKR_USER_NOT_LOGGED_IN`,
/// the token removed), the call fails with a
/// [connection fault](Pkcs11Error::is_connection_fault), logged with
/// `tracing`, every idle session is dropped, and the next call finds the
/// token again, opens a session and logs in again.
#[derive(Clone)]
pub struct Pkcs11Token {
    inner: Arc<Inner>,
}

pub(super) struct Inner {
    module_path: PathBuf,
    label: String,
    pin: Pin,
    pkcs11: Pkcs11,
    max_sessions: usize,
    pub(super) rsa_bits: u32,
    pool: Mutex<Pool>,
    freed: Condvar,
}

/// The sessions, and what they were opened on.
struct Pool {
    /// The token's slot; `None` until connected, and after a fault.
    slot: Option<Slot>,
    /// Counts connections: a session or a cached object handle of an older
    /// connection is not used again.
    generation: u64,
    idle: Vec<Session>,
    /// Sessions lent out.
    lent: usize,
    /// The mechanisms the token offers.
    mechanisms: Arc<[MechanismType]>,
}

/// Opens a [`Pkcs11Token`]; see [`Pkcs11Token::builder`]. The setters only
/// record their value; [`open`](Self::open) checks them, loads the module,
/// finds the token and logs in.
#[must_use]
#[derive(Debug, Clone)]
pub struct Pkcs11TokenBuilder {
    module: PathBuf,
    label: String,
    pin: Option<Pin>,
    pin_file: Option<PathBuf>,
    sessions: Option<usize>,
    rsa_bits: u32,
}

impl Pkcs11TokenBuilder {
    /// The user PIN, as a value.
    pub fn pin(mut self, pin: Pin) -> Self {
        self.pin = Some(pin);
        self
    }

    /// Reads the user PIN from this file when the token is opened, with
    /// the checks of [`Pin::from_file`] (for other checks, read it with
    /// [`Pin::builder`] and give it to [`pin`](Self::pin)).
    pub fn pin_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.pin_file = Some(path.into());
        self
    }

    /// How many sessions the token keeps open at most (default: the
    /// signer's signing threads, one per core, at most 16).
    pub fn sessions(mut self, sessions: usize) -> Self {
        self.sessions = Some(sessions);
        self
    }

    /// The size of the RSA keys [`Pkcs11Token::generate`] makes: 2048
    /// (the default), 3072 or 4096 bits.
    pub fn rsa_bits(mut self, bits: u32) -> Self {
        self.rsa_bits = bits;
        self
    }

    /// Checks the settings, loads and initialises the module (once per
    /// process), finds the token by its label, opens a session and logs in.
    /// Blocking.
    ///
    /// # Errors
    ///
    /// In this order: [`Pkcs11Error::Config`] for a setting (no PIN, or
    /// both a PIN and a PIN file; `sessions` 0 or above 64; `rsa_bits`);
    /// [`Pkcs11Error::PinFile`] for the PIN file; [`Pkcs11Error::Module`]
    /// for a module that is missing or fails to load;
    /// [`Pkcs11Error::TokenNotFound`] (naming the labels present) or
    /// [`Pkcs11Error::TokenAmbiguous`]; [`Pkcs11Error::WrongPin`] or
    /// [`Pkcs11Error::PinLocked`] when the token refuses the PIN.
    pub fn open(self) -> Result<Pkcs11Token, Pkcs11Error> {
        let max_sessions = self.sessions.unwrap_or_else(crate::signer::signing_threads);
        if max_sessions == 0 || max_sessions > 64 {
            return Err(ConfigError::new("sessions", max_sessions, "use 1 to 64 sessions").into());
        }
        if !RSA_BITS.contains(&self.rsa_bits) {
            return Err(ConfigError::new(
                "rsa_bits",
                self.rsa_bits,
                "choose 2048, 3072 or 4096 bits",
            )
            .into());
        }
        let pin = match (self.pin, self.pin_file) {
            (Some(pin), None) => pin,
            (None, Some(path)) => Pin::from_file(path)?,
            (None, None) => {
                return Err(ConfigError::without_value(
                    "pin",
                    "the token needs its user PIN: give pin or pin_file",
                )
                .into());
            }
            (Some(_), Some(_)) => {
                return Err(ConfigError::without_value(
                    "pin",
                    "give either pin or pin_file, not both",
                )
                .into());
            }
        };
        let pkcs11 = load_module(&self.module)?;
        let token = Pkcs11Token {
            inner: Arc::new(Inner {
                module_path: self.module,
                label: self.label,
                pin,
                pkcs11,
                max_sessions,
                rsa_bits: self.rsa_bits,
                pool: Mutex::new(Pool {
                    slot: None,
                    generation: 0,
                    idle: Vec::new(),
                    lent: 0,
                    mechanisms: Arc::new([]),
                }),
                freed: Condvar::new(),
            }),
        };
        // The first connection: a wrong PIN or a missing token stops here.
        drop(token.inner.lease()?);
        Ok(token)
    }
}

impl Pkcs11Token {
    /// A builder for the token labelled `token_label` in the PKCS#11
    /// module at `module` (a `.so` path, such as
    /// `/usr/lib/softhsm/libsofthsm2.so`).
    pub fn builder(
        module: impl Into<PathBuf>,
        token_label: impl Into<String>,
    ) -> Pkcs11TokenBuilder {
        Pkcs11TokenBuilder {
            module: module.into(),
            label: token_label.into(),
            pin: None,
            pin_file: None,
            sessions: None,
            rsa_bits: 2048,
        }
    }

    /// The token's label.
    pub fn label(&self) -> &str {
        &self.inner.label
    }

    /// The module's path, as given.
    pub fn module(&self) -> &Path {
        &self.inner.module_path
    }

    /// The most sessions the token keeps open.
    pub fn max_sessions(&self) -> usize {
        self.inner.max_sessions
    }

    pub(super) fn inner(&self) -> &Arc<Inner> {
        &self.inner
    }
}

impl fmt::Debug for Pkcs11Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pkcs11Token")
            .field("module", &self.inner.module_path)
            .field("label", &self.inner.label)
            .field("sessions", &self.inner.max_sessions)
            .finish_non_exhaustive()
    }
}

/// A session lent out of the pool; given back when dropped, unless its
/// connection failed meanwhile.
pub(super) struct Lease<'a> {
    inner: &'a Inner,
    session: Option<Session>,
    generation: u64,
    mechanisms: Arc<[MechanismType]>,
}

impl Lease<'_> {
    pub(super) fn session(&self) -> &Session {
        self.session.as_ref().expect("held until dropped")
    }

    /// The connection this session belongs to.
    pub(super) fn generation(&self) -> u64 {
        self.generation
    }

    /// The mechanisms the token offers.
    pub(super) fn mechanisms(&self) -> &[MechanismType] {
        &self.mechanisms
    }
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        let mut pool = self.inner.lock();
        pool.lent -= 1;
        if let Some(session) = self.session.take()
            && pool.generation == self.generation
            && pool.slot.is_some()
        {
            pool.idle.push(session);
        }
        drop(pool);
        self.inner.freed.notify_one();
    }
}

impl Inner {
    pub(super) fn label(&self) -> &str {
        &self.label
    }

    pub(super) fn module_path(&self) -> &Path {
        &self.module_path
    }

    fn lock(&self) -> MutexGuard<'_, Pool> {
        // Every change leaves the pool consistent.
        self.pool.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A logged-in session: an idle one, a new one while fewer than the
    /// maximum are open, or the next one given back. Finds the token and
    /// logs in first when not connected (at first, and after a fault).
    pub(super) fn lease(&self) -> Result<Lease<'_>, Pkcs11Error> {
        let mut pool = self.lock();
        let deadline = Instant::now() + SESSION_WAIT;
        loop {
            if pool.slot.is_none() {
                self.connect(&mut pool)?;
            }
            let session = match pool.idle.pop() {
                Some(session) => Some(session),
                None if pool.idle.len() + pool.lent < self.max_sessions => {
                    let slot = pool.slot.expect("connected");
                    Some(self.open_session(slot)?)
                }
                None => None,
            };
            if let Some(session) = session {
                pool.lent += 1;
                return Ok(Lease {
                    inner: self,
                    session: Some(session),
                    generation: pool.generation,
                    mechanisms: Arc::clone(&pool.mechanisms),
                });
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(Pkcs11Error::Busy {
                    token: self.label.clone(),
                });
            }
            pool = self
                .freed
                .wait_timeout(pool, deadline - now)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    /// Runs `op` on a session of the token. A connection fault drops the
    /// session and every idle one, and logs an error: the next call
    /// connects again.
    pub(super) fn with_session<T>(
        &self,
        operation: &'static str,
        op: impl FnOnce(&Lease<'_>) -> Result<T, Pkcs11Error>,
    ) -> Result<T, Pkcs11Error> {
        let mut lease = self.lease()?;
        let result = op(&lease);
        if let Err(err) = &result
            && err.is_connection_fault()
        {
            tracing::error!(
                token = %self.label,
                operation,
                error = %err,
                "PKCS#11 token fault: this call fails closed; the token's sessions are opened and logged in again on the next call"
            );
            lease.session = None;
            let mut pool = self.lock();
            if pool.generation == lease.generation {
                pool.slot = None;
                pool.idle.clear();
            }
        }
        result
    }

    /// Finds the token, drops the sessions of the previous connection,
    /// opens a session, logs in and reads the mechanisms.
    fn connect(&self, pool: &mut Pool) -> Result<(), Pkcs11Error> {
        pool.idle.clear();
        let slot = self.find_slot()?;
        let session = self.open_session(slot)?;
        let mechanisms = self
            .pkcs11
            .get_mechanism_list(slot)
            .map_err(|err| self.error("list the mechanisms", err))?;
        pool.slot = Some(slot);
        pool.generation += 1;
        pool.mechanisms = mechanisms.into();
        pool.idle.push(session);
        if pool.generation > 1 {
            tracing::info!(token = %self.label, "PKCS#11 token: sessions opened and logged in again");
        }
        Ok(())
    }

    /// The slot of the token labelled `label`.
    fn find_slot(&self) -> Result<Slot, Pkcs11Error> {
        let slots = self
            .pkcs11
            .get_slots_with_token()
            .map_err(|err| self.error("list the slots", err))?;
        let mut present = Vec::new();
        let mut found = Vec::new();
        for slot in slots {
            let info = match self.pkcs11.get_token_info(slot) {
                Ok(info) => info,
                // Removed between the listing and now.
                Err(_) => continue,
            };
            if !info.token_initialized() {
                continue;
            }
            if info.label() == self.label {
                found.push(slot);
            }
            present.push(info.label().to_owned());
        }
        match found.as_slice() {
            [slot] => Ok(*slot),
            [] => Err(Pkcs11Error::TokenNotFound {
                label: self.label.clone(),
                module: self.module_path.clone(),
                present,
            }),
            more => Err(Pkcs11Error::TokenAmbiguous {
                label: self.label.clone(),
                count: more.len(),
            }),
        }
    }

    /// A read-write session on `slot`, logged in as the user (a session
    /// opened while the token is logged in is a user session already).
    fn open_session(&self, slot: Slot) -> Result<Session, Pkcs11Error> {
        let session = self
            .pkcs11
            .open_rw_session(slot)
            .map_err(|err| self.error("open a session", err))?;
        match session.login(UserType::User, Some(self.pin.auth())) {
            Ok(()) | Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => Ok(session),
            Err(CkError::Pkcs11(
                RvError::PinIncorrect | RvError::PinInvalid | RvError::PinLenRange,
                _,
            )) => Err(Pkcs11Error::WrongPin {
                token: self.label.clone(),
            }),
            Err(CkError::Pkcs11(RvError::PinLocked, _)) => Err(Pkcs11Error::PinLocked {
                token: self.label.clone(),
            }),
            Err(err) => Err(self.error("log in", err)),
        }
    }

    /// A PKCS#11 error of `operation`, classified.
    pub(super) fn error(&self, operation: &'static str, err: CkError) -> Pkcs11Error {
        let connection = matches!(
            err,
            CkError::Pkcs11(
                RvError::SessionHandleInvalid
                    | RvError::SessionClosed
                    | RvError::UserNotLoggedIn
                    | RvError::DeviceRemoved
                    | RvError::DeviceError
                    | RvError::TokenNotPresent
                    | RvError::TokenNotRecognized
                    | RvError::SlotIdInvalid
                    | RvError::KeyHandleInvalid
                    | RvError::ObjectHandleInvalid
                    | RvError::CryptokiNotInitialized
                    | RvError::GeneralError,
                _
            )
        );
        Pkcs11Error::Token {
            token: self.label.clone(),
            operation,
            source: Box::new(err),
            connection,
        }
    }
}
