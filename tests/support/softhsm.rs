//! SoftHSM2 tokens of their own, one per test, in a temporary directory.
//!
//! SoftHSM reads its configuration (where its tokens are) from the
//! `SOFTHSM2_CONF` environment variable once, when the module is
//! initialised, and PKCS#11 initialises a module once per process. So a
//! token of its own per test needs a process of its own per test: the test
//! body runs in a child process of this test binary (`<binary> <test>
//! --exact`), whose environment, and only its, holds `SOFTHSM2_CONF`
//! pointing at a configuration this test wrote. The parent never sets an
//! environment variable (tests run in threads; the environment is the
//! process's), makes the token with `softhsm2-util --init-token` under the
//! same variable, waits for the child (bounded), and deletes the directory.
//! Nothing is shared between tests or with the machine's own tokens.
//!
//! Without SoftHSM2 the tests fail with "install softhsm2"; `.ci/run`
//! installs it.

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The environment variable that tells a child which test it runs.
const CHILD: &str = "TOWER_JWT_SIGNER_SOFTHSM_TEST";
/// The token directory's parent, in the child.
const DIR: &str = "TOWER_JWT_SIGNER_SOFTHSM_DIR";

/// The label of each test's token.
pub const TOKEN: &str = "tower-jwt-signer-test";
/// Its user PIN.
pub const PIN: &str = "1234-test-pin";
/// Its security officer PIN.
pub const SO_PIN: &str = "5678-test-so-pin";

/// How long a test's child process may run.
const CHILD_LIMIT: Duration = Duration::from_secs(600);

/// Where Debian and others install the SoftHSM2 module.
const MODULES: [&str; 3] = [
    "/usr/lib/softhsm/libsofthsm2.so",
    "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/local/lib/softhsm/libsofthsm2.so",
];

/// The SoftHSM2 module, or a panic saying to install it.
pub fn module() -> PathBuf {
    let found = MODULES.iter().map(PathBuf::from).find(|path| path.exists());
    let util = Command::new("softhsm2-util")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success());
    match found {
        Some(module) if util => module,
        _ => panic!(
            "install softhsm2 (apt-get install softhsm2): the PKCS#11 tests need its module ({}) and softhsm2-util",
            MODULES[0]
        ),
    }
}

/// The token of the running test, as its child process sees it.
#[derive(Debug)]
pub struct SoftHsm {
    /// The PKCS#11 module.
    pub module: PathBuf,
    /// This test's directory: `softhsm2.conf`, `tokens/`, `pin` (0600).
    pub dir: PathBuf,
}

impl SoftHsm {
    /// The configuration file (`SOFTHSM2_CONF`).
    pub fn conf(&self) -> PathBuf {
        self.dir.join("softhsm2.conf")
    }

    /// The token directory.
    pub fn tokens(&self) -> PathBuf {
        self.dir.join("tokens")
    }

    /// The PIN file (0600, the PIN and a newline).
    pub fn pin_file(&self) -> PathBuf {
        self.dir.join("pin")
    }

    /// `softhsm2-util` with this test's configuration.
    pub fn util(&self) -> Command {
        let mut command = Command::new("softhsm2-util");
        command.env("SOFTHSM2_CONF", self.conf());
        command
    }

    /// Makes another token labelled `label` in this test's directory.
    pub fn init_token(&self, label: &str) {
        let output = self
            .util()
            .args(["--init-token", "--free", "--label", label])
            .args(["--so-pin", SO_PIN, "--pin", PIN])
            .output()
            .expect("softhsm2-util runs");
        assert!(
            output.status.success(),
            "softhsm2-util --init-token: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }

    /// Imports a PKCS#8 PEM key pair into the test's token, with `label`
    /// and `id` (hex).
    pub fn import(&self, pem: &str, label: &str, id: &str) {
        let file = self.dir.join(format!("{label}.pem"));
        std::fs::write(&file, pem).unwrap();
        let output = self
            .util()
            .args(["--import"])
            .arg(&file)
            .args(["--token", TOKEN, "--label", label, "--id", id, "--pin", PIN])
            .output()
            .expect("softhsm2-util runs");
        std::fs::remove_file(&file).unwrap();
        assert!(
            output.status.success(),
            "softhsm2-util --import: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

/// Writes the configuration, the token and the PIN file of a test in
/// `dir`.
fn prepare(dir: &Path) -> SoftHsm {
    let hsm = SoftHsm {
        module: module(),
        dir: dir.to_path_buf(),
    };
    std::fs::create_dir(hsm.tokens()).unwrap();
    std::fs::write(
        hsm.conf(),
        format!(
            "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
            hsm.tokens().display()
        ),
    )
    .unwrap();
    hsm.init_token(TOKEN);
    write_private(&hsm.pin_file(), format!("{PIN}\n").as_bytes());
    hsm
}

/// Writes `bytes` to a new file of mode 0600.
pub fn write_private(path: &Path, bytes: &[u8]) {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .unwrap();
    file.write_all(bytes).unwrap();
}

/// Runs `body` with a SoftHSM2 token of its own, in a child process of
/// this test binary that runs only the test `test` (its libtest name,
/// `module::name`: [`test_name!`](crate::test_name)). See the [module
/// docs](self).
pub fn isolated(test: &str, body: impl FnOnce(&SoftHsm)) {
    if let Ok(running) = std::env::var(CHILD) {
        assert_eq!(running, test, "the child runs the test it was started for");
        let dir = PathBuf::from(std::env::var(DIR).expect("the child knows its directory"));
        body(&SoftHsm {
            module: module(),
            dir,
        });
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let hsm = prepare(tmp.path());
    let exe = std::env::current_exe().unwrap();
    let mut child = Command::new(exe)
        .args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env("SOFTHSM2_CONF", hsm.conf())
        .env(CHILD, test)
        .env(DIR, &hsm.dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the test binary starts again");
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let out = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stdout.read_to_string(&mut text);
        text
    });
    let err = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if started.elapsed() > CHILD_LIMIT {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let (out, err) = (out.join().unwrap(), err.join().unwrap());
    let ran = out.contains(&format!("test {test} ... ok"));
    match status {
        Some(status) if status.success() && ran => {}
        Some(status) => panic!(
            "{test} failed in its SoftHSM child ({status}):\n--- stdout\n{out}\n--- stderr\n{err}"
        ),
        None => panic!(
            "{test} ran over {CHILD_LIMIT:?} in its SoftHSM child:\n--- stdout\n{out}\n--- stderr\n{err}"
        ),
    }
}

/// The libtest name of the test function it is used in (`module::name`,
/// without the crate), for [`isolated`]: `isolated(test_name!(), |hsm| ..)`.
#[macro_export]
macro_rules! test_name {
    () => {{
        fn here() {}
        let path = std::any::type_name_of_val(&here);
        let path = path.strip_suffix("::here").expect("a function path");
        // libtest names tests without the crate.
        path.split_once("::").map_or(path, |(_, rest)| rest)
    }};
}

/// A current-thread runtime with tokio's time (paused when asked).
pub fn runtime(paused: bool) -> tokio::runtime::Runtime {
    let mut builder = tokio::runtime::Builder::new_current_thread();
    builder.enable_all();
    if paused {
        builder.start_paused(true);
    }
    builder.build().unwrap()
}
