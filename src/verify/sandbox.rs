//! Running one shell command for the test stage: an allow-listed environment, its own
//! process group killed at the end, a wall-clock limit, capped output, and bubblewrap
//! (no network, everything outside the worktree read-only) when it is used.

use std::ffi::OsString;
use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::config::SandboxPolicy;

/// Variables a test run inherits; everything else (tokens, cloud credentials, the
/// rest) is dropped. `test.pass_env` adds names.
pub const ENV_ALLOW: &[&str] = &[
    "PATH",
    "HOME",
    "USER",
    "LOGNAME",
    "SHELL",
    "LANG",
    "LANGUAGE",
    "LC_ALL",
    "LC_CTYPE",
    "TERM",
    "TZ",
    "RUSTUP_HOME",
    "RUSTUP_TOOLCHAIN",
    "CARGO_HOME",
    "GOPATH",
    "GOROOT",
    "GOCACHE",
    "GOMODCACHE",
    "GOFLAGS",
    "JAVA_HOME",
    "VIRTUAL_ENV",
    "CONDA_PREFIX",
    "PYENV_ROOT",
    "PYENV_VERSION",
    "NVM_DIR",
    "NODE_PATH",
];

/// Files and folders under `$HOME` hidden from a sandboxed run: credentials live there.
const HIDDEN_UNDER_HOME: &[&str] = &[
    ".aws",
    ".ssh",
    ".gnupg",
    ".docker",
    ".kube",
    ".azure",
    ".config/gh",
    ".config/gcloud",
    ".netrc",
    ".git-credentials",
    ".npmrc",
    ".pypirc",
    ".cargo/credentials",
    ".cargo/credentials.toml",
];

/// Output kept per command: the first [`HEAD_BYTES`] and the last `cap - HEAD_BYTES`.
pub const OUTPUT_CAP: usize = 512 * 1024;
const HEAD_BYTES: usize = 64 * 1024;

/// How commands are isolated.
#[derive(Debug, Clone)]
pub struct Sandbox {
    /// `bwrap`, when runs are wrapped in it.
    pub bwrap: Option<PathBuf>,
    /// Extra variable names passed through (`test.pass_env`).
    pub pass_env: Vec<String>,
    /// Folders besides the worktree a sandboxed run may write (a shared build cache).
    pub writable: Vec<PathBuf>,
    /// Folders under the private `/tmp` a sandboxed run must still read (the objects
    /// a worktree borrows, a virtualenv).
    pub readable: Vec<PathBuf>,
    /// Keep the network (`test.setup_network`, for the setup command only).
    pub network: bool,
}

/// The sandbox the policy asks for, or why it cannot be had; with `auto`, a warning
/// when the tests will run unsandboxed.
pub fn resolve(
    policy: SandboxPolicy,
    pass_env: &[String],
) -> Result<(Sandbox, Option<String>), String> {
    let mut warning = None;
    let bwrap = match policy {
        SandboxPolicy::Off => None,
        SandboxPolicy::Auto => match find_on_path("bwrap") {
            None => {
                warning = Some("bubblewrap (`bwrap`) is not installed, so the tests run unsandboxed: with network access and your user's files (install bubblewrap, or set test.sandbox: required to refuse)".to_string());
                None
            }
            Some(b) => match probe(&b) {
                Ok(()) => Some(b),
                Err(e) => {
                    warning = Some(format!(
                        "bubblewrap cannot make a sandbox here ({e}), so the tests run unsandboxed (set test.sandbox: required to refuse)"
                    ));
                    None
                }
            },
        },
        SandboxPolicy::Required => {
            let b = find_on_path("bwrap").ok_or_else(|| {
                "test.sandbox is `required`, and bubblewrap (`bwrap`) is not on PATH".to_string()
            })?;
            probe(&b).map_err(|e| {
                format!(
                    "test.sandbox is `required`, and bubblewrap cannot make a sandbox here: {e}"
                )
            })?;
            Some(b)
        }
    };
    Ok((
        Sandbox {
            bwrap,
            pass_env: pass_env.to_vec(),
            writable: Vec::new(),
            readable: Vec::new(),
            network: false,
        },
        warning,
    ))
}

/// Whether bubblewrap can make the namespaces it needs (user namespaces may be off).
fn probe(bwrap: &Path) -> Result<(), String> {
    let out = Command::new(bwrap)
        .args([
            "--ro-bind",
            "/",
            "/",
            "--dev",
            "/dev",
            "--proc",
            "/proc",
            "--unshare-net",
            "--unshare-pid",
            "--die-with-parent",
            "--",
            "true",
        ])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
    }
}

/// The first executable `name` on PATH.
pub fn find_on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// What one command did.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Exec {
    /// The command line as given.
    pub command: String,
    /// Its exit code; `None` when killed by a signal or at the limit.
    pub exit_code: Option<i32>,
    /// Killed at the wall-clock limit.
    pub timed_out: bool,
    /// Wall-clock seconds.
    pub seconds: f64,
    /// Combined stdout and stderr, capped (the middle is cut when long).
    #[serde(skip)]
    pub output: String,
    /// Bytes cut from the middle of the output.
    pub output_cut_bytes: usize,
    /// Run inside bubblewrap.
    pub sandboxed: bool,
}

impl Exec {
    /// Finished with exit code 0.
    pub fn ok(&self) -> bool {
        self.exit_code == Some(0) && !self.timed_out
    }

    /// The last `n` lines of the output.
    pub fn tail(&self, n: usize) -> String {
        let lines: Vec<&str> = self.output.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }
}

/// Head and tail of a stream, the middle dropped past the cap.
#[derive(Default)]
struct Capped {
    head: Vec<u8>,
    tail: std::collections::VecDeque<u8>,
    cut: usize,
}

impl Capped {
    fn push(&mut self, mut bytes: &[u8]) {
        if self.head.len() < HEAD_BYTES {
            let take = (HEAD_BYTES - self.head.len()).min(bytes.len());
            self.head.extend_from_slice(&bytes[..take]);
            bytes = &bytes[take..];
        }
        self.tail.extend(bytes);
        let room = OUTPUT_CAP - HEAD_BYTES;
        if self.tail.len() > room {
            let drop = self.tail.len() - room;
            self.tail.drain(..drop);
            self.cut += drop;
        }
    }

    fn text(&self) -> String {
        let mut out = String::from_utf8_lossy(&self.head).into_owned();
        if self.cut > 0 {
            out.push_str(&format!("\n[… {} bytes cut …]\n", self.cut));
        }
        let tail: Vec<u8> = self.tail.iter().copied().collect();
        out.push_str(&String::from_utf8_lossy(&tail));
        out
    }
}

impl Sandbox {
    /// Run `script` with `sh -c` in `dir` (the only writable place besides a private
    /// `/tmp` when sandboxed), with `extra_env` added to the allow-listed environment.
    /// Stops at `timeout` or when `stop()` says so, killing the whole process group.
    pub fn exec(
        &self,
        dir: &Path,
        script: &str,
        extra_env: &[(String, String)],
        timeout: Duration,
        stop: &dyn Fn() -> bool,
    ) -> std::io::Result<Exec> {
        let mut cmd = match &self.bwrap {
            Some(bwrap) => {
                let mut c = Command::new(bwrap);
                c.args(self.bwrap_args(dir));
                c.arg("sh").arg("-c").arg(script);
                c
            }
            None => {
                let mut c = Command::new("sh");
                c.arg("-c").arg(script);
                c
            }
        };
        cmd.current_dir(dir).env_clear();
        for (k, v) in self.environment() {
            cmd.env(k, v);
        }
        for (k, v) in extra_env {
            cmd.env(k, v);
        }
        let (mut reader, writer) = std::io::pipe()?;
        cmd.stdin(Stdio::null())
            .stdout(writer.try_clone()?)
            .stderr(writer)
            // Its own process group, so the end of the run can kill every child.
            .process_group(0);
        let start = Instant::now();
        let mut child = cmd.spawn()?;
        // The parent's copies of the pipe's write end close with the command.
        drop(cmd);
        let pgid = child.id() as i32;
        if let Ok(mut g) = LIVE_GROUPS.lock() {
            g.push(pgid);
        }
        let captured = Arc::new(Mutex::new(Capped::default()));
        let sink = Arc::clone(&captured);
        let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
        std::thread::spawn(move || {
            let mut buf = [0u8; 16 * 1024];
            loop {
                match reader.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if let Ok(mut c) = sink.lock() {
                            c.push(&buf[..n]);
                        }
                    }
                }
            }
            let _ = done_tx.send(());
        });
        // A waiter thread reaps the child, so its end is seen at once (no polling
        // delay); this thread watches the clock and Ctrl-C.
        let (status_tx, status_rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = status_tx.send(child.wait());
        });
        let deadline = start + timeout;
        let mut timed_out = false;
        let mut status = None;
        loop {
            let now = Instant::now();
            if now >= deadline {
                timed_out = true;
                break;
            }
            match status_rx.recv_timeout((deadline - now).min(Duration::from_millis(50))) {
                Ok(s) => {
                    status = s.ok();
                    break;
                }
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) if !stop() => {}
                Err(_) => break,
            }
        }
        // Whatever happened, nothing the command started outlives it.
        kill_group(pgid);
        if let Ok(mut g) = LIVE_GROUPS.lock() {
            g.retain(|x| *x != pgid);
        }
        if status.is_none() {
            status = status_rx.recv().ok().and_then(Result::ok);
        }
        let seconds = start.elapsed().as_secs_f64();
        // A child that left its group could hold the pipe open: wait a little, not forever.
        let _ = done_rx.recv_timeout(Duration::from_secs(2));
        let (output, cut) = match captured.lock() {
            Ok(c) => (c.text(), c.cut),
            Err(_) => (String::new(), 0),
        };
        Ok(Exec {
            command: script.to_string(),
            exit_code: if timed_out {
                None
            } else {
                status.and_then(|s| s.code())
            },
            timed_out,
            seconds,
            output,
            output_cut_bytes: cut,
            sandboxed: self.bwrap.is_some(),
        })
    }

    /// The allow-listed environment, with `CI=true` and no bytecode files.
    fn environment(&self) -> Vec<(OsString, OsString)> {
        let mut out: Vec<(OsString, OsString)> = Vec::new();
        for name in ENV_ALLOW
            .iter()
            .map(|s| s.to_string())
            .chain(self.pass_env.iter().cloned())
        {
            if let Some(v) = std::env::var_os(&name) {
                out.push((name.into(), v));
            }
        }
        out.push(("CI".into(), "true".into()));
        out.push(("PYTHONDONTWRITEBYTECODE".into(), "1".into()));
        out.push((
            "AUTOTRIAGE_SANDBOX".into(),
            if self.bwrap.is_some() {
                "bwrap"
            } else {
                "none"
            }
            .into(),
        ));
        out
    }

    /// bubblewrap: a view built from an allow-list — the system folders and the
    /// toolchains read-only (see [`visible_paths`]), a private `/tmp`, the worktree
    /// writable — so no host socket outside it (`/var/tmp`, `/run`, a home folder) can
    /// be reached; credentials under `$HOME` hidden, no network, its own PID
    /// namespace, and dead with its parent.
    fn bwrap_args(&self, dir: &Path) -> Vec<OsString> {
        let mut a: Vec<OsString> = Vec::new();
        if !self.network {
            a.push("--unshare-net".into());
        }
        for p in visible_paths() {
            match std::fs::symlink_metadata(&p) {
                // `/bin` → `usr/bin` on merged-/usr systems: the same link inside.
                Ok(m) if m.file_type().is_symlink() => {
                    if let Ok(target) = std::fs::read_link(&p) {
                        a.extend([
                            "--symlink".into(),
                            target.into_os_string(),
                            p.into_os_string(),
                        ]);
                    }
                }
                Ok(_) => a.extend([
                    "--ro-bind".into(),
                    p.clone().into_os_string(),
                    p.into_os_string(),
                ]),
                Err(_) => {}
            }
        }
        a.extend(
            ["--dev", "/dev", "--proc", "/proc", "--tmpfs", "/tmp"]
                .iter()
                .map(OsString::from),
        );
        for r in &self.readable {
            if r.exists() {
                a.extend([
                    "--ro-bind".into(),
                    r.as_os_str().to_owned(),
                    r.as_os_str().to_owned(),
                ]);
            }
        }
        if let Some(home) = std::env::var_os("HOME").map(PathBuf::from) {
            for hidden in HIDDEN_UNDER_HOME {
                let p = home.join(hidden);
                if p.is_dir() {
                    a.extend(["--tmpfs".into(), p.into_os_string()]);
                } else if p.exists() {
                    a.extend(["--ro-bind".into(), "/dev/null".into(), p.into_os_string()]);
                }
            }
        }
        for w in &self.writable {
            a.extend([
                "--bind".into(),
                w.as_os_str().to_owned(),
                w.as_os_str().to_owned(),
            ]);
        }
        a.extend([
            "--bind".into(),
            dir.as_os_str().to_owned(),
            dir.as_os_str().to_owned(),
            "--chdir".into(),
            dir.as_os_str().to_owned(),
            "--unshare-pid".into(),
            "--unshare-ipc".into(),
            "--unshare-uts".into(),
            "--die-with-parent".into(),
            "--new-session".into(),
            "--".into(),
        ]);
        a
    }
}

/// True for a folder under `$HOME` that holds credentials (hidden in the sandbox).
pub fn is_hidden_credential(p: &Path) -> bool {
    std::env::var_os("HOME")
        .map(PathBuf::from)
        .is_some_and(|h| {
            HIDDEN_UNDER_HOME
                .iter()
                .any(|x| p.starts_with(h.join(x)) || h.join(x).starts_with(p))
        })
}

/// System folders every test may read: programs, libraries, configuration.
const SYSTEM_DIRS: &[&str] = &[
    "/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc", "/opt", "/nix",
];

/// Toolchain folders under `$HOME` a test command may need (compilers, interpreters,
/// their packages): read-only when present.
const TOOLCHAINS_UNDER_HOME: &[&str] = &[
    ".cargo",
    ".rustup",
    ".pyenv",
    ".local",
    ".nvm",
    ".volta",
    ".asdf",
    ".rbenv",
    ".nodenv",
    ".sdkman",
    ".deno",
    ".bun",
    "go",
    ".go",
    ".poetry",
    ".conda",
    "miniconda3",
    "anaconda3",
];

/// Variables naming toolchains or environments whose folders are made visible.
const TOOLCHAIN_VARS: &[&str] = &[
    "CARGO_HOME",
    "RUSTUP_HOME",
    "PYENV_ROOT",
    "VIRTUAL_ENV",
    "CONDA_PREFIX",
    "GOROOT",
    "GOPATH",
    "JAVA_HOME",
    "NVM_DIR",
    "VOLTA_HOME",
];

/// What of a path under `home` the sandbox shows: the toolchain dot-folder it is in,
/// else the path itself; never `home`.
fn shown_under_home(p: &Path, home: &Path) -> Option<PathBuf> {
    let rest = p.strip_prefix(home).ok()?;
    let first = rest.components().next()?;
    if first.as_os_str().to_string_lossy().starts_with('.') {
        Some(home.join(first))
    } else {
        Some(p.to_path_buf())
    }
}

/// What the sandbox shows of the host, read-only: the system folders, the PATH
/// entries outside them (a whole toolchain folder for one under `$HOME`, such as
/// `~/.pyenv` for `~/.pyenv/shims`), the toolchain folders under `$HOME`, and the
/// folders the toolchain variables name. Nothing else: `/var`, `/run`, `/srv`,
/// `/home`, `/mnt` and the rest of `$HOME` are not there.
pub fn visible_paths() -> Vec<PathBuf> {
    let home = std::env::var_os("HOME").map(PathBuf::from);
    let mut out: Vec<PathBuf> = SYSTEM_DIRS.iter().map(PathBuf::from).collect();
    let add = |p: PathBuf, out: &mut Vec<PathBuf>| {
        if !p.is_absolute() || p == Path::new("/") || !p.exists() {
            return;
        }
        // Under $HOME: a toolchain's dot-folder whole (`~/.pyenv` for
        // `~/.pyenv/shims`), anything else only itself: a tool installed under
        // `~/work/_temp` must not show the checkouts beside it (a CI runner keeps the
        // workflow's token in `~/work/<repo>/.git/config`). Never $HOME itself.
        let p = match home.as_ref() {
            Some(h) if p.starts_with(h) => match shown_under_home(&p, h) {
                Some(shown) => shown,
                None => return,
            },
            _ => p,
        };
        let hidden = home.as_ref().is_some_and(|h| {
            HIDDEN_UNDER_HOME
                .iter()
                .any(|x| p.starts_with(h.join(x)) || h.join(x).starts_with(&p))
        });
        if hidden || out.iter().any(|o| p.starts_with(o)) {
            return;
        }
        out.retain(|o| !o.starts_with(&p));
        out.push(p);
    };
    for dir in std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()) {
        for d in [Some(dir.clone()), std::fs::canonicalize(&dir).ok()]
            .into_iter()
            .flatten()
        {
            // `…/bin` and `…/shims` belong to a toolchain: show all of it
            // (`~/.pyenv/shims` needs `~/.pyenv/versions`); rustup's proxies in
            // `~/.cargo/bin` need `~/.rustup`.
            let name = d.file_name().and_then(|n| n.to_str()).unwrap_or("");
            let root = match (name, d.parent()) {
                ("bin" | "shims", Some(parent)) if parent != Path::new("/") => parent.to_path_buf(),
                _ => d.clone(),
            };
            if root.file_name().and_then(|n| n.to_str()) == Some(".cargo")
                && let Some(p) = root.parent()
            {
                add(p.join(".rustup"), &mut out);
            }
            add(root, &mut out);
        }
    }
    if let Some(h) = &home {
        for t in TOOLCHAINS_UNDER_HOME {
            add(h.join(t), &mut out);
        }
    }
    for var in TOOLCHAIN_VARS {
        if let Some(v) = std::env::var_os(var).filter(|v| !v.is_empty()) {
            let p = PathBuf::from(v);
            if let Ok(real) = std::fs::canonicalize(&p) {
                add(real, &mut out);
            }
            add(p, &mut out);
        }
    }
    out
}

/// Process groups of the commands running now, killed if the process must exit at once
/// (a second Ctrl-C): an unsandboxed test's children would otherwise outlive it.
static LIVE_GROUPS: std::sync::Mutex<Vec<i32>> = std::sync::Mutex::new(Vec::new());

/// Kill every test command still running (called just before a forced exit).
pub fn kill_all() {
    if let Ok(groups) = LIVE_GROUPS.lock() {
        for g in groups.iter() {
            kill_group(*g);
        }
    }
}

fn kill_group(pgid: i32) {
    if pgid > 0 {
        // SAFETY: kill(2) with a negative pid signals that process group; no memory is
        // shared with it.
        unsafe {
            libc::kill(-pgid, libc::SIGKILL);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tool_under_home_shows_its_toolchain_folder_or_only_itself() {
        let home = Path::new("/home/runner");
        assert_eq!(
            shown_under_home(Path::new("/home/runner/.pyenv/shims"), home),
            Some(PathBuf::from("/home/runner/.pyenv"))
        );
        // Not the runner's `work` folder, where the checkouts (and their tokens) are.
        assert_eq!(
            shown_under_home(Path::new("/home/runner/work/_temp/autotriage/bin"), home),
            Some(PathBuf::from("/home/runner/work/_temp/autotriage/bin"))
        );
        assert_eq!(shown_under_home(home, home), None);
    }

    #[test]
    fn the_output_keeps_its_head_and_tail_past_the_cap() {
        let mut c = Capped::default();
        c.push(&vec![b'a'; HEAD_BYTES]);
        c.push(&vec![b'b'; OUTPUT_CAP]);
        c.push(b"the end");
        let text = c.text();
        assert!(text.starts_with("aaaa"));
        assert!(text.ends_with("bbbthe end"));
        assert_eq!(c.cut, HEAD_BYTES + 7);
        assert!(text.contains(&format!("[… {} bytes cut …]", HEAD_BYTES + 7)));
    }

    #[test]
    fn only_allow_listed_variables_reach_the_command() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let sb = Sandbox {
            bwrap: None,
            pass_env: vec![],
            writable: vec![],
            readable: vec![],
            network: false,
        };
        // SAFETY: the variable is unique to this test; no other test reads it.
        unsafe { std::env::set_var("AUTOTRIAGE_TEST_SECRET_X", "s3cret") };
        let e = sb.exec(
            dir.path(),
            "echo \"[$AUTOTRIAGE_TEST_SECRET_X][$CI]\"; exit 4",
            &[],
            Duration::from_secs(20),
            &|| false,
        )?;
        assert_eq!(e.output.trim(), "[][true]");
        assert_eq!(e.exit_code, Some(4));
        Ok(())
    }
}
