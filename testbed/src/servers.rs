//! Throwaway real servers: a `redis-server` or a PostgreSQL cluster on a free `127.0.0.1` port in a
//! temp dir, stopped and removed when the handle is dropped.
//!
//! Tests and the runner's embedded default both need the real thing (this project's rule: real
//! servers run in the default test suite), so this is library code with proper errors, not a test
//! helper. The API is synchronous (`std::process`), so it works from sync and async tests alike.
//!
//! How a server starts:
//!
//! 1. The binaries are looked up on `PATH`, then in `/usr/lib/postgresql/*/bin` (highest version
//!    first); a missing one is [`ServerError::MissingBinary`], naming the Debian package.
//! 2. A free port comes from binding `127.0.0.1:0` and dropping the listener. Another process may
//!    take the port in between, so a server that fails with "Address already in use" is retried
//!    on a new port (up to [`BIND_ATTEMPTS`] times).
//! 3. Readiness is the server's own log line ("Ready to accept connections", "database system is
//!    ready to accept connections"), read from its stdout/stderr with a [`READY_TIMEOUT`], then a
//!    short TCP connect poll. A server that exits or stays silent is [`ServerError::NotReady`] with
//!    the last lines it logged.
//! 4. PostgreSQL refuses to run as root: when the effective uid is 0, `initdb` and `postgres` run
//!    as the `postgres` user (via [`std::os::unix::process::CommandExt::uid`], which also drops
//!    supplementary groups) in a temp dir chowned to that user. Not `runuser`: it forks and
//!    stays the parent, so its pid is not the postmaster's, and it answers SIGTERM with a SIGTERM
//!    (a *smart* shutdown that waits for clients) followed two seconds later by a SIGKILL.
//!
//! How a server stops (on drop): a graceful signal (SIGTERM for Redis, SIGINT = fast shutdown for
//! PostgreSQL, which ends its backends too), up to [`STOP_GRACE`] to exit, then SIGKILL; the child
//! is always reaped, and the temp dir is removed after the process is gone. A test process killed
//! with SIGKILL cannot run drops, so its servers outlive it; nothing here can prevent that without
//! `unsafe` (`PR_SET_PDEATHSIG` in a `pre_exec` hook).

use std::collections::VecDeque;
use std::ffi::{OsStr, OsString};
use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Read};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rustix::process::{Pid, Signal};
use tempfile::TempDir;

/// How long a server may take to log that it is ready before [`ServerError::NotReady`].
///
/// Generous because a loaded 2-core CI box running `initdb` for several tests at once is slow;
/// a healthy start takes well under a second.
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a server gets to exit after the graceful stop signal before it is SIGKILLed.
pub const STOP_GRACE: Duration = Duration::from_secs(5);

/// How many ports a server start tries when the chosen free port is taken before the server binds
/// it (the unavoidable race between dropping our probe listener and the server's bind).
pub const BIND_ATTEMPTS: usize = 3;

/// Where PostgreSQL's versioned binaries live on Debian and Ubuntu (`/usr/lib/postgresql/15/bin`);
/// `initdb` and `postgres` are not on `PATH` there by default.
const DEBIAN_POSTGRES_ROOT: &str = "/usr/lib/postgresql";

/// How many log lines a server handle keeps for error messages.
const LOG_TAIL_LINES: usize = 40;

/// The role and database that `initdb -U postgres` creates, used in the URLs.
const POSTGRES_SUPERUSER: &str = "postgres";

/// Why a throwaway server could not be started.
///
/// Every variant says which server or command failed, and the ones where the server ran carry its
/// last log lines, so a failing test explains itself without re-running. Underlying I/O errors
/// are the [`std::error::Error::source`], not repeated in the message: print with `{:#}` (anyhow)
/// or `{:?}` to see them.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    /// A server binary is not installed; the message names the Debian package that provides it.
    #[error(
        "`{binary}` was not found on PATH or in {DEBIAN_POSTGRES_ROOT}/*/bin; \
         install the Debian package `{package}` (apt-get install {package})"
    )]
    MissingBinary {
        /// The program that was looked up, e.g. `initdb`.
        binary: String,
        /// The Debian package that installs it, e.g. `postgresql`.
        package: String,
    },
    /// The operating system could not start a program (exec failed, no such user, ...).
    #[error("could not start {what} (`{program}`)")]
    Spawn {
        /// Which step failed, e.g. `redis-server`.
        what: String,
        /// The program's path.
        program: String,
        /// The error from spawning it.
        source: std::io::Error,
    },
    /// A server started but did not log that it was ready: it exited or timed out.
    #[error("{what} did not become ready: {reason}; its last log lines:\n{log_tail}")]
    NotReady {
        /// Which server, e.g. `postgres on 127.0.0.1:5433`.
        what: String,
        /// What happened instead, e.g. `exited with exit status: 1`.
        reason: String,
        /// The last lines the server wrote to stdout and stderr.
        log_tail: String,
    },
    /// A setup command (such as `initdb`) ran and failed.
    #[error("{what} failed ({status}); its output:\n{output}")]
    CommandFailed {
        /// The command, e.g. `initdb`.
        what: String,
        /// How it exited.
        status: ExitStatus,
        /// The end of its stdout and stderr.
        output: String,
    },
    /// Running as root, but PostgreSQL's unprivileged `postgres` user could not be found or used.
    #[error(
        "PostgreSQL refuses to run as root and the `postgres` user cannot be used: {reason}; \
         install the Debian package `postgresql` (it creates the user) or run as a non-root user"
    )]
    NoPostgresUser {
        /// What went wrong looking the user up or preparing the directory for it.
        reason: String,
    },
    /// A filesystem or socket operation failed while preparing or checking a server.
    #[error("{what}")]
    Io {
        /// What was being done, e.g. `creating a temp dir`.
        what: String,
        /// The underlying error.
        source: std::io::Error,
    },
}

impl ServerError {
    fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> ServerError {
        let what = what.into();
        move |source| ServerError::Io { what, source }
    }

    /// True when the server died because another process took its port first; worth a retry.
    fn is_port_taken(&self) -> bool {
        matches!(self, ServerError::NotReady { log_tail, .. } if log_tail.contains("Address already in use"))
    }
}

/// The Debian package that installs `binary`, for [`ServerError::MissingBinary`].
fn debian_package(binary: &str) -> &str {
    match binary {
        "redis-server" | "redis-cli" => "redis-server",
        "initdb" | "postgres" | "pg_ctl" => "postgresql",
        "psql" | "pg_isready" => "postgresql-client",
        other => other,
    }
}

/// The search path the servers use: `$PATH`, then `/usr/lib/postgresql/<version>/bin` for every
/// installed version, highest first.
///
/// Debian keeps `initdb` and `postgres` out of `PATH`, so `PATH` alone would miss them; listing
/// `PATH` first lets a developer's own build win.
pub fn default_search_path() -> OsString {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).collect())
        .unwrap_or_default();
    let mut versions: Vec<(Vec<u32>, PathBuf)> = std::fs::read_dir(DEBIAN_POSTGRES_ROOT)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name();
            // "15", "9.6": numeric parts, so 15 sorts above 9.6.
            let version = name
                .to_str()?
                .split('.')
                .map(|part| part.parse().ok())
                .collect::<Option<Vec<u32>>>()?;
            Some((version, entry.path().join("bin")))
        })
        .collect();
    versions.sort_by(|a, b| b.0.cmp(&a.0));
    dirs.extend(versions.into_iter().map(|(_, dir)| dir));
    // A directory containing ':' cannot be joined; such a PATH entry could not be searched anyway.
    std::env::join_paths(
        dirs.iter()
            .filter(|dir| !dir.as_os_str().as_encoded_bytes().contains(&b':')),
    )
    .unwrap_or_default()
}

/// Finds the executable `binary` in `search_path` (a `PATH`-style list), first match wins.
///
/// Public so the runner can check its embedded servers before a run, and so tests can check the
/// [`ServerError::MissingBinary`] message with an empty search path instead of uninstalling
/// anything. The servers call it with [`default_search_path`].
pub fn find_binary(binary: &str, search_path: &OsStr) -> Result<PathBuf, ServerError> {
    std::env::split_paths(search_path)
        .filter(|dir| !dir.as_os_str().is_empty())
        .map(|dir| dir.join(binary))
        .find(|candidate| is_executable(candidate))
        .ok_or_else(|| ServerError::MissingBinary {
            binary: binary.to_owned(),
            package: debian_package(binary).to_owned(),
        })
}

fn is_executable(path: &Path) -> bool {
    std::fs::metadata(path)
        .is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
}

/// Asks the kernel for a free loopback port by binding port 0. The listener is dropped before the
/// server binds, so the port can be taken in between; callers retry on "Address already in use".
fn free_port() -> Result<u16, ServerError> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .map_err(ServerError::io("binding 127.0.0.1:0 to find a free port"))?;
    let port = listener
        .local_addr()
        .map_err(ServerError::io("reading the free port's address"))?
        .port();
    Ok(port)
}

/// The last lines a server logged, shared between its reader threads and its handle.
#[derive(Clone, Default)]
struct LogTail(Arc<Mutex<VecDeque<String>>>);

impl LogTail {
    fn push(&self, line: String) {
        // A poisoned lock only means a reader thread panicked mid-push; the lines are still good.
        let mut lines = self
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if lines.len() == LOG_TAIL_LINES {
            lines.pop_front();
        }
        lines.push_back(line);
    }

    fn text(&self) -> String {
        let lines = self
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut text = String::new();
        for line in lines.iter() {
            let _ = writeln!(text, "  {line}");
        }
        if text.is_empty() {
            text.push_str("  (nothing)\n");
        }
        text
    }
}

/// Copies one output pipe of a server into its [`LogTail`] and, while someone listens, a channel.
///
/// The thread must keep draining after readiness (when the receiver is gone): a server blocked on
/// a full pipe would hang. It ends at end of file, when the server and its children have exited.
fn spawn_log_reader(
    pipe: impl Read + Send + 'static,
    tail: LogTail,
    lines: mpsc::Sender<String>,
) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("server-log".into())
        .spawn(move || {
            let mut reader = BufReader::new(pipe);
            let mut buf = Vec::new();
            loop {
                buf.clear();
                match reader.read_until(b'\n', &mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        let line = String::from_utf8_lossy(&buf).trim_end().to_owned();
                        tail.push(line.clone());
                        let _ = lines.send(line);
                    }
                }
            }
        })
        .map(drop)
}

/// A running server process: stopped (graceful signal, grace period, SIGKILL) and reaped on drop.
struct Supervised {
    child: Child,
    log: LogTail,
    stop_signal: Signal,
}

impl Supervised {
    /// Spawns `command` with piped output and waits until a log line contains `ready_line` and
    /// `addr` accepts a TCP connection.
    fn start(
        what: &str,
        mut command: Command,
        ready_line: &str,
        addr: SocketAddr,
        stop_signal: Signal,
    ) -> Result<Supervised, ServerError> {
        let program = command.get_program().to_string_lossy().into_owned();
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|source| ServerError::Spawn {
                what: what.to_owned(),
                program,
                source,
            })?;
        // From here on, an early return drops `server`, which stops the child.
        let mut server = Supervised {
            child,
            log: LogTail::default(),
            stop_signal,
        };
        let (sender, lines) = mpsc::channel();
        if let Some(stdout) = server.child.stdout.take() {
            spawn_log_reader(stdout, server.log.clone(), sender.clone())
                .map_err(ServerError::io(format!("starting a log reader for {what}")))?;
        }
        if let Some(stderr) = server.child.stderr.take() {
            spawn_log_reader(stderr, server.log.clone(), sender)
                .map_err(ServerError::io(format!("starting a log reader for {what}")))?;
        }
        server.wait_ready(what, &lines, ready_line)?;
        server.wait_accepting(what, addr)?;
        Ok(server)
    }

    fn wait_ready(
        &mut self,
        what: &str,
        lines: &mpsc::Receiver<String>,
        ready_line: &str,
    ) -> Result<(), ServerError> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            let now = Instant::now();
            if now >= deadline {
                return Err(self.not_ready(what, format!("no ready line within {READY_TIMEOUT:?}")));
            }
            let wait = (deadline - now).min(Duration::from_millis(100));
            match lines.recv_timeout(wait) {
                Ok(line) if line.contains(ready_line) => return Ok(()),
                Ok(_) => {}
                Err(err) => {
                    if let Some(status) = self
                        .child
                        .try_wait()
                        .map_err(ServerError::io(format!("checking on {what}")))?
                    {
                        // Let the readers reach end of file so the tail holds the last words.
                        let drain_until = Instant::now() + Duration::from_secs(1);
                        while lines
                            .recv_timeout(drain_until.saturating_duration_since(Instant::now()))
                            .is_ok()
                        {}
                        return Err(self.not_ready(what, format!("exited with {status}")));
                    }
                    if err == RecvTimeoutError::Disconnected {
                        // Both pipes closed but the process lives on; don't spin on the channel.
                        std::thread::sleep(wait);
                    }
                }
            }
        }
    }

    /// Belt and braces after the ready line: the port really accepts connections.
    fn wait_accepting(&mut self, what: &str, addr: SocketAddr) -> Result<(), ServerError> {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_ok() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(
                    self.not_ready(what, format!("logged ready but {addr} refuses connections"))
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn not_ready(&self, what: &str, reason: String) -> ServerError {
        ServerError::NotReady {
            what: what.to_owned(),
            reason,
            log_tail: self.log.text(),
        }
    }

    /// Waits up to `grace` for the child to exit; true if it has been reaped.
    fn wait_exit(&mut self, grace: Duration) -> bool {
        let deadline = Instant::now() + grace;
        loop {
            match self.child.try_wait() {
                Ok(Some(_)) | Err(_) => return true,
                Ok(None) if Instant::now() >= deadline => return false,
                Ok(None) => std::thread::sleep(Duration::from_millis(10)),
            }
        }
    }
}

impl Drop for Supervised {
    fn drop(&mut self) {
        // Signal only a child that has not been reaped, so the pid cannot belong to someone else.
        if let Ok(None) = self.child.try_wait() {
            let _ = rustix::process::kill_process(Pid::from_child(&self.child), self.stop_signal);
            if !self.wait_exit(STOP_GRACE) {
                let _ = self.child.kill();
            }
        }
        let _ = self.child.wait();
    }
}

/// Starts a server on a fresh free port, retrying on a new port when another process takes the
/// port between our probe and the server's bind.
fn start_on_free_port<T>(
    mut start: impl FnMut(SocketAddr) -> Result<T, ServerError>,
) -> Result<T, ServerError> {
    let mut attempt = 1;
    loop {
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, free_port()?));
        match start(addr) {
            Err(err) if err.is_port_taken() && attempt < BIND_ATTEMPTS => attempt += 1,
            result => return result,
        }
    }
}

fn temp_dir(prefix: &str) -> Result<TempDir, ServerError> {
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir()
        .map_err(ServerError::io(format!(
            "creating a temp dir in {}",
            std::env::temp_dir().display()
        )))
}

/// A throwaway `redis-server` on a free `127.0.0.1` port in a temp dir; killed and removed on drop.
///
/// No persistence (`--save ""`, `--appendonly no`), so a test's data disappears with the handle.
pub struct RedisServer {
    // Field order matters: the process stops before its directory is removed.
    process: Supervised,
    addr: SocketAddr,
    _dir: TempDir,
}

impl RedisServer {
    /// Starts `redis-server` with the default settings and waits until it accepts connections.
    pub fn start() -> Result<RedisServer, ServerError> {
        RedisServer::start_with(&[])
    }

    /// Starts `redis-server` with `extra_args` appended to its command line, e.g.
    /// `["--maxmemory", "1mb"]`, for tests that need a differently configured server.
    pub fn start_with(extra_args: &[&str]) -> Result<RedisServer, ServerError> {
        let binary = find_binary("redis-server", &default_search_path())?;
        let dir = temp_dir("chaos-redis-")?;
        start_on_free_port(|addr| {
            let mut command = Command::new(&binary);
            command
                .arg("--port")
                .arg(addr.port().to_string())
                .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
                .arg("--dir")
                .arg(dir.path())
                .args(["--daemonize", "no"])
                .args(extra_args)
                .current_dir(dir.path());
            let what = format!("redis-server on {addr}");
            let process = Supervised::start(
                &what,
                command,
                "Ready to accept connections",
                addr,
                Signal::TERM,
            )?;
            Ok((process, addr))
        })
        .map(|(process, addr)| RedisServer {
            process,
            addr,
            _dir: dir,
        })
    }

    /// The address the server listens on (always `127.0.0.1`).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// A connection URL for redis clients: `redis://127.0.0.1:PORT/`.
    pub fn url(&self) -> String {
        format!("redis://{}/", self.addr)
    }

    /// The server's process id, so a test can pause (SIGSTOP) or kill the real server to simulate
    /// a hung or crashed upstream.
    pub fn pid(&self) -> u32 {
        self.process.child.id()
    }

    /// The last lines the server logged, for a failing test's message.
    pub fn log_tail(&self) -> String {
        self.process.log.text()
    }
}

/// The unprivileged user PostgreSQL runs as when we are root.
#[derive(Clone, Copy)]
struct RunAs {
    uid: u32,
    gid: u32,
}

impl RunAs {
    /// `None` when not root (run as ourselves); the `postgres` user's ids when root.
    fn for_postgres() -> Result<Option<RunAs>, ServerError> {
        if !rustix::process::geteuid().is_root() {
            return Ok(None);
        }
        // `id` rather than parsing /etc/passwd: it goes through NSS like every other tool.
        let uid = id_of(POSTGRES_SUPERUSER, "-u")?;
        let gid = id_of(POSTGRES_SUPERUSER, "-g")?;
        Ok(Some(RunAs { uid, gid }))
    }

    fn apply(self, command: &mut Command) {
        // std drops supplementary groups too when it sets the uid as root.
        command.uid(self.uid).gid(self.gid);
    }

    /// Hands `dir` (a 0700 temp dir) to the user, after checking its parents let the user in.
    fn take_over(self, dir: &Path) -> Result<(), ServerError> {
        std::os::unix::fs::chown(dir, Some(self.uid), Some(self.gid)).map_err(ServerError::io(
            format!("chowning {} to the postgres user", dir.display()),
        ))?;
        for parent in dir.ancestors().skip(1) {
            let meta = std::fs::metadata(parent)
                .map_err(ServerError::io(format!("reading {}", parent.display())))?;
            let mode = meta.mode();
            let traversable = mode & 0o001 != 0
                || (meta.uid() == self.uid && mode & 0o100 != 0)
                || (meta.gid() == self.gid && mode & 0o010 != 0);
            if !traversable {
                return Err(ServerError::NoPostgresUser {
                    reason: format!(
                        "it cannot enter {} (mode {:o}); set TMPDIR to a directory such as /tmp",
                        parent.display(),
                        mode & 0o7777
                    ),
                });
            }
        }
        Ok(())
    }
}

fn id_of(user: &str, flag: &str) -> Result<u32, ServerError> {
    let output = Command::new("id")
        .args([flag, user])
        .output()
        .map_err(|err| ServerError::NoPostgresUser {
            reason: format!("running `id {flag} {user}`: {err}"),
        })?;
    let text = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        return Err(ServerError::NoPostgresUser {
            reason: format!(
                "`id {flag} {user}` failed: {}",
                String::from_utf8_lossy(&output.stderr).trim()
            ),
        });
    }
    text.trim()
        .parse()
        .map_err(|_| ServerError::NoPostgresUser {
            reason: format!("`id {flag} {user}` printed {:?}", text.trim()),
        })
}

/// The end of a finished command's output, for [`ServerError::CommandFailed`].
fn output_tail(output: &std::process::Output) -> String {
    let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&output.stderr));
    let lines: Vec<&str> = text.lines().collect();
    let start = lines.len().saturating_sub(LOG_TAIL_LINES);
    lines[start..].iter().fold(String::new(), |mut tail, line| {
        let _ = writeln!(tail, "  {line}");
        tail
    })
}

/// Percent-encodes everything but RFC 3986 unreserved characters, for a database name in a URL.
fn encode_path_segment(segment: &str) -> String {
    let mut encoded = String::with_capacity(segment.len());
    for byte in segment.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            encoded.push(char::from(byte));
        } else {
            let _ = write!(encoded, "%{byte:02X}");
        }
    }
    encoded
}

/// A throwaway PostgreSQL cluster (`initdb` + `postgres`) on a free `127.0.0.1` port in a temp
/// dir; stopped and removed on drop.
///
/// Trust authentication on loopback for the `postgres` superuser, and durability switched off
/// (`fsync=off`, `synchronous_commit=off`, `full_page_writes=off`): fast, and nothing here needs to
/// survive a crash. `max_connections=200` leaves room for pool-exhaustion drills.
pub struct PostgresServer {
    // Field order matters: the postmaster stops before its data directory is removed.
    process: Supervised,
    addr: SocketAddr,
    dir: TempDir,
}

impl PostgresServer {
    /// Creates a cluster with `initdb` and starts `postgres` on it, waiting until it accepts
    /// connections. Takes about a second, most of it `initdb`.
    pub fn start() -> Result<PostgresServer, ServerError> {
        PostgresServer::start_with(&[])
    }

    /// Like [`PostgresServer::start`], with `extra_args` appended to the `postgres` command line,
    /// e.g. `["-c", "statement_timeout=100"]`; later `-c` settings override the defaults.
    pub fn start_with(extra_args: &[&str]) -> Result<PostgresServer, ServerError> {
        let search_path = default_search_path();
        let initdb = find_binary("initdb", &search_path)?;
        // Prefer the postgres next to initdb, so both come from the same major version.
        let postgres = initdb
            .parent()
            .map(|dir| dir.join("postgres"))
            .filter(|candidate| is_executable(candidate))
            .map_or_else(|| find_binary("postgres", &search_path), Ok)?;
        let run_as = RunAs::for_postgres()?;
        let dir = temp_dir("chaos-postgres-")?;
        if let Some(run_as) = run_as {
            run_as.take_over(dir.path())?;
        }
        let data = dir.path().join("data");

        let mut command = Command::new(&initdb);
        command
            .arg("-D")
            .arg(&data)
            .args([
                "-U",
                POSTGRES_SUPERUSER,
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            ])
            .current_dir(dir.path())
            .env("LC_ALL", "C")
            .stdin(Stdio::null());
        if let Some(run_as) = run_as {
            run_as.apply(&mut command);
        }
        let output = command.output().map_err(|source| ServerError::Spawn {
            what: "initdb".into(),
            program: initdb.display().to_string(),
            source,
        })?;
        if !output.status.success() {
            return Err(ServerError::CommandFailed {
                what: format!("initdb -D {}", data.display()),
                status: output.status,
                output: output_tail(&output),
            });
        }

        start_on_free_port(|addr| {
            let mut command = Command::new(&postgres);
            command
                .arg("-D")
                .arg(&data)
                .arg("-k")
                .arg(dir.path())
                .arg("-p")
                .arg(addr.port().to_string())
                .args(["-c", "listen_addresses=127.0.0.1"])
                .args([
                    "-c",
                    "fsync=off",
                    "-c",
                    "synchronous_commit=off",
                    "-c",
                    "full_page_writes=off",
                ])
                .args(["-c", "shared_buffers=16MB", "-c", "max_connections=200"])
                // The ready line is read from stderr, so the log must stay there, in English.
                .args(["-c", "logging_collector=off", "-c", "lc_messages=C"])
                .args(extra_args)
                .current_dir(dir.path())
                .env("LC_ALL", "C");
            if let Some(run_as) = run_as {
                run_as.apply(&mut command);
            }
            let what = format!("postgres on {addr}");
            // SIGINT is PostgreSQL's fast shutdown: it ends open sessions instead of waiting.
            let process = Supervised::start(
                &what,
                command,
                "database system is ready to accept connections",
                addr,
                Signal::INT,
            )?;
            Ok((process, addr))
        })
        .map(|(process, addr)| PostgresServer { process, addr, dir })
    }

    /// The address the server listens on (always `127.0.0.1`).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// A URL for the `postgres` database as the `postgres` superuser (no password: trust auth):
    /// `postgres://postgres@127.0.0.1:PORT/postgres`.
    pub fn url(&self) -> String {
        self.url_for(POSTGRES_SUPERUSER)
    }

    /// A URL for `database` as the `postgres` superuser; the name is percent-encoded. The database
    /// must exist (`CREATE DATABASE` it through [`PostgresServer::url`] first).
    pub fn url_for(&self, database: &str) -> String {
        format!(
            "postgres://{POSTGRES_SUPERUSER}@{}/{}",
            self.addr,
            encode_path_segment(database)
        )
    }

    /// The directory holding the Unix socket (`-k`), for clients that prefer it to TCP.
    pub fn socket_dir(&self) -> &Path {
        self.dir.path()
    }

    /// The postmaster's process id, so a test can pause (SIGSTOP) or kill the real server to
    /// simulate a hung or crashed upstream.
    pub fn pid(&self) -> u32 {
        self.process.child.id()
    }

    /// The last lines the server logged, for a failing test's message.
    pub fn log_tail(&self) -> String {
        self.process.log.text()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packages_are_debian_names() {
        assert_eq!(debian_package("redis-server"), "redis-server");
        assert_eq!(debian_package("initdb"), "postgresql");
        assert_eq!(debian_package("postgres"), "postgresql");
        assert_eq!(debian_package("psql"), "postgresql-client");
    }

    #[test]
    fn database_names_are_percent_encoded() {
        assert_eq!(encode_path_segment("app_test-1"), "app_test-1");
        assert_eq!(encode_path_segment("a b/c"), "a%20b%2Fc");
    }

    #[test]
    fn log_tail_keeps_the_last_lines() {
        let tail = LogTail::default();
        for n in 0..(LOG_TAIL_LINES + 5) {
            tail.push(format!("line {n}"));
        }
        let text = tail.text();
        assert!(!text.contains("line 4\n"), "{text}");
        assert!(text.contains("line 5\n"), "{text}");
        assert!(
            text.ends_with(&format!("line {}\n", LOG_TAIL_LINES + 4)),
            "{text}"
        );
    }

    fn port_taken() -> ServerError {
        ServerError::NotReady {
            what: "redis-server".into(),
            reason: "exited with exit status: 1".into(),
            log_tail: "bind: Address already in use".into(),
        }
    }

    #[test]
    fn a_taken_port_is_retried_on_a_new_port() {
        let mut tried = Vec::new();
        let started = start_on_free_port(|addr| {
            tried.push(addr);
            if tried.len() < BIND_ATTEMPTS {
                Err(port_taken())
            } else {
                Ok(addr)
            }
        });
        assert_eq!(started.ok(), tried.last().copied());
        assert_eq!(tried.len(), BIND_ATTEMPTS);
    }

    #[test]
    fn retries_stop_after_the_last_attempt_and_on_other_errors() {
        let mut attempts = 0;
        let result: Result<(), _> = start_on_free_port(|_| {
            attempts += 1;
            Err(port_taken())
        });
        assert!(result.is_err_and(|err| err.is_port_taken()));
        assert_eq!(attempts, BIND_ATTEMPTS);

        let mut attempts = 0;
        let result: Result<(), _> = start_on_free_port(|_| {
            attempts += 1;
            Err(ServerError::NotReady {
                what: "x".into(),
                reason: "timeout".into(),
                log_tail: String::new(),
            })
        });
        assert!(result.is_err());
        assert_eq!(attempts, 1);
    }

    #[test]
    fn port_taken_is_recognised_from_the_log() {
        let err = ServerError::NotReady {
            what: "redis-server".into(),
            reason: "exited".into(),
            log_tail: "Could not create server TCP listening socket 127.0.0.1:6379: bind: Address already in use".into(),
        };
        assert!(err.is_port_taken());
    }
}
