//! The examples as real processes: the binaries `cargo test` builds into
//! `target/<profile>/examples/` before it runs any test (the sibling of
//! the test binary's `deps/` directory).
//!
//! [`Example::new`] refuses (panics, saying what to run) when the binary
//! is missing or older than any source file it is built from (the files
//! its dep-info, `examples/NAME.d`, lists: the example, `examples/support/`
//! and the library's `src/`): a stale binary never passes a test. The
//! dep-info is cargo's own list, so an example that cargo rightly did not
//! rebuild (another example changed) is not refused. `cargo test --test
//! tools` alone does not build the examples; plain `cargo test` or `cargo
//! build --examples` first does.
//!
//! A spawned example ([`Running`]) is killed and reaped when dropped, even
//! when the test fails; its stdout and stderr are read line by line on
//! their own threads, and every wait is bounded.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

/// How long an example may take to print a line or to exit.
pub const LIMIT: Duration = Duration::from_secs(60);

/// An example binary, checked to exist and to be newer than the sources.
#[derive(Debug, Clone)]
pub struct Example {
    name: String,
    path: PathBuf,
}

/// Where `cargo test` puts the examples for this test binary:
/// `target/<profile>/examples/`, next to `target/<profile>/deps/`.
fn examples_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    let deps = exe.parent().expect("the test binary is in deps/");
    deps.parent()
        .expect("deps/ is in target/<profile>/")
        .join("examples")
}

/// The newest modification time of the files under `roots` (recursively),
/// with the file that has it.
fn newest(roots: &[PathBuf]) -> Option<(SystemTime, PathBuf)> {
    let mut newest: Option<(SystemTime, PathBuf)> = None;
    let mut pending: Vec<PathBuf> = roots.to_vec();
    while let Some(path) = pending.pop() {
        let Ok(meta) = std::fs::metadata(&path) else {
            continue;
        };
        if meta.is_dir() {
            for entry in std::fs::read_dir(&path).expect("a readable directory") {
                pending.push(entry.expect("a directory entry").path());
            }
        } else if let Ok(modified) = meta.modified()
            && newest.as_ref().is_none_or(|(time, _)| modified > *time)
        {
            newest = Some((modified, path));
        }
    }
    newest
}

/// The source files `binary` was built from, from the dep-info cargo
/// writes next to it (`NAME.d`: `target: dep dep ...`, spaces in paths
/// escaped as `\ `).
pub fn built_from(binary: &Path) -> Result<Vec<PathBuf>, String> {
    let dep_info = binary.with_extension("d");
    let text = std::fs::read_to_string(&dep_info)
        .map_err(|err| format!("{} is missing ({err})", dep_info.display()))?;
    let line = text.lines().next().unwrap_or_default();
    let (_, deps) = line
        .split_once(": ")
        .ok_or_else(|| format!("{} has no dependency list", dep_info.display()))?;
    let mut files = Vec::new();
    let mut current = String::new();
    let mut chars = deps.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => current.extend(chars.next()),
            ' ' => {
                if !current.is_empty() {
                    files.push(PathBuf::from(std::mem::take(&mut current)));
                }
            }
            c => current.push(c),
        }
    }
    if !current.is_empty() {
        files.push(PathBuf::from(current));
    }
    if files.is_empty() {
        return Err(format!("{} lists no source file", dep_info.display()));
    }
    Ok(files)
}

/// `Ok` when `binary` exists and is newer than every file under `sources`;
/// otherwise why not.
pub fn check_fresh(binary: &Path, sources: &[PathBuf]) -> Result<(), String> {
    let built = std::fs::metadata(binary)
        .and_then(|meta| meta.modified())
        .map_err(|err| format!("{} is missing ({err})", binary.display()))?;
    match newest(sources) {
        Some((changed, file)) if changed > built => Err(format!(
            "{} is older than {}: it was built before the last change",
            binary.display(),
            file.display()
        )),
        _ => Ok(()),
    }
}

impl Example {
    /// The example `name`, built and up to date; panics otherwise.
    pub fn new(name: &str) -> Self {
        let path = examples_dir().join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
        let fresh = built_from(&path).and_then(|sources| check_fresh(&path, &sources));
        if let Err(why) = fresh {
            panic!(
                "the example {name} cannot be run: {why}. Run plain `cargo test` (it builds \
                 the examples before the tests), or `cargo build --examples` (with the same \
                 features) before `cargo test --test tools`."
            );
        }
        Example {
            name: name.to_owned(),
            path,
        }
    }

    /// Starts it with `args`, stdin closed, stdout and stderr captured.
    pub fn spawn(&self, args: &[&str]) -> Running {
        self.spawn_with_env(args, &[])
    }

    /// Starts it with `args` and the environment variables `env` (added to
    /// the test's, without its `TJS_` variables: the examples read their
    /// flags from those).
    pub fn spawn_with_env(&self, args: &[&str], env: &[(&str, &str)]) -> Running {
        let mut command = Command::new(&self.path);
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("TJS_") {
                command.env_remove(name);
            }
        }
        let mut child = command
            .envs(env.iter().copied())
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|err| panic!("cannot start {}: {err}", self.path.display()));
        let output = Arc::new(Output::default());
        let stdout = child.stdout.take().expect("piped stdout");
        let stderr = child.stderr.take().expect("piped stderr");
        Output::read(Arc::clone(&output), stdout, Stream::Stdout);
        Output::read(Arc::clone(&output), stderr, Stream::Stderr);
        Running {
            name: format!("{} {}", self.name, args.join(" ")),
            child: Mutex::new(child),
            output,
        }
    }

    /// Runs it with `args` to the end (killed and failed after `limit`).
    pub fn run(&self, args: &[&str], limit: Duration) -> Finished {
        self.spawn(args).wait(limit)
    }

    /// [`run`](Self::run) with the environment variables `env`.
    pub fn run_with_env(&self, args: &[&str], env: &[(&str, &str)], limit: Duration) -> Finished {
        self.spawn_with_env(args, env).wait(limit)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stream {
    Stdout,
    Stderr,
}

/// What a process printed so far, and which streams are closed.
#[derive(Default)]
struct Output {
    lines: Mutex<Vec<(Stream, String)>>,
    closed: Mutex<usize>,
}

impl Output {
    fn read(output: Arc<Self>, pipe: impl std::io::Read + Send + 'static, stream: Stream) {
        std::thread::spawn(move || {
            use std::io::BufRead as _;
            for line in std::io::BufReader::new(pipe).lines() {
                let Ok(line) = line else { break };
                output.lines.lock().unwrap().push((stream, line));
            }
            *output.closed.lock().unwrap() += 1;
        });
    }

    fn text(&self, stream: Stream) -> String {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .filter(|(from, _)| *from == stream)
            .map(|(_, line)| format!("{line}\n"))
            .collect()
    }

    fn find(&self, matches: &dyn Fn(&str) -> bool) -> Option<String> {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .map(|(_, line)| line)
            .find(|line| matches(line))
            .cloned()
    }

    fn both_closed(&self) -> bool {
        *self.closed.lock().unwrap() == 2
    }
}

/// A running example: killed and reaped when dropped.
pub struct Running {
    name: String,
    child: Mutex<Child>,
    output: Arc<Output>,
}

impl Drop for Running {
    fn drop(&mut self) {
        let child = self.child.get_mut().unwrap_or_else(|e| e.into_inner());
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// How an example ended.
#[derive(Debug)]
pub struct Finished {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Finished {
    /// The exit code (`None` when killed by a signal).
    pub fn code(&self) -> Option<i32> {
        self.status.code()
    }
}

enum Step<T> {
    Done(T),
    Exited(ExitStatus),
    Wait,
}

impl Running {
    /// Everything printed so far (for failure messages).
    pub fn transcript(&self) -> String {
        format!(
            "`{}` printed:\n--- stdout\n{}--- stderr\n{}---",
            self.name,
            self.output.text(Stream::Stdout),
            self.output.text(Stream::Stderr)
        )
    }

    fn exited(&self) -> Option<ExitStatus> {
        self.child
            .lock()
            .unwrap()
            .try_wait()
            .expect("the child's status")
    }

    fn step(&self, matches: &dyn Fn(&str) -> bool) -> Step<String> {
        if let Some(line) = self.output.find(matches) {
            return Step::Done(line);
        }
        match self.exited() {
            // Its last lines may still be in the pipes.
            Some(status) if self.output.both_closed() => match self.output.find(matches) {
                Some(line) => Step::Done(line),
                None => Step::Exited(status),
            },
            _ => Step::Wait,
        }
    }

    fn gave_up(&self, what: &str, step: Step<String>) -> ! {
        match step {
            Step::Exited(status) => panic!(
                "{what}: the example exited ({status}) first; {}",
                self.transcript()
            ),
            _ => panic!("{what}: not within {LIMIT:?}; {}", self.transcript()),
        }
    }

    /// Waits (blocking, up to [`LIMIT`]) for a line on stdout or stderr
    /// that `matches`; panics with the transcript if the example exits or
    /// the time runs out first.
    pub fn line(&self, what: &str, matches: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + LIMIT;
        loop {
            match self.step(&matches) {
                Step::Done(line) => return line,
                Step::Wait if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(10));
                }
                step => self.gave_up(what, step),
            }
        }
    }

    /// [`line`](Self::line) for async tests: waits without blocking the
    /// runtime's thread.
    pub async fn line_async(&self, what: &str, matches: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + LIMIT;
        loop {
            match self.step(&matches) {
                Step::Done(line) => return line,
                Step::Wait if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                step => self.gave_up(what, step),
            }
        }
    }

    /// The process id (to send it signals).
    pub fn pid(&self) -> u32 {
        self.child.lock().unwrap().id()
    }

    /// How many lines printed so far `matches`.
    pub fn count(&self, matches: impl Fn(&str) -> bool) -> usize {
        self.output
            .lines
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, line)| matches(line))
            .count()
    }

    /// The address in the first line that contains `marker` followed by
    /// `http://ADDR` (the examples print where they listen).
    pub async fn address(&self, marker: &str) -> SocketAddr {
        let line = self
            .line_async(&format!("a line with {marker:?} and its address"), |line| {
                line.contains(marker) && line.contains("http://")
            })
            .await;
        address_in(&line[line.find(marker).expect("the marker")..])
    }

    /// Waits (up to `limit`) for the example to exit and for its output;
    /// kills it and panics when it does not.
    pub fn wait(self, limit: Duration) -> Finished {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.exited()
                && self.output.both_closed()
            {
                return Finished {
                    status,
                    stdout: self.output.text(Stream::Stdout),
                    stderr: self.output.text(Stream::Stderr),
                };
            }
            if Instant::now() >= deadline {
                panic!("did not exit within {limit:?}; {}", self.transcript());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// The first `http://ADDR` in `text`.
pub fn address_in(text: &str) -> SocketAddr {
    let start = text.find("http://").expect("an http:// address") + "http://".len();
    let rest = &text[start..];
    let end = rest
        .find(|c: char| c == '/' || c.is_whitespace() || c == ')' || c == ',')
        .unwrap_or(rest.len());
    rest[..end]
        .parse()
        .unwrap_or_else(|err| panic!("{:?} is not an address: {err}", &rest[..end]))
}
