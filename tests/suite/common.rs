//! The test context: a temporary home and working folder, and the real binary run in
//! them with a clean environment.

use std::path::{Path, PathBuf};
use std::process::Output;

use assert_cmd::Command;

/// The fixtures folder.
pub fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

/// A sandbox: `home` for user config, `dir` as the working folder.
pub struct TestContext {
    pub home: tempfile::TempDir,
    pub dir: tempfile::TempDir,
}

impl TestContext {
    pub fn new() -> Self {
        Self {
            home: tempfile::tempdir().unwrap(),
            dir: tempfile::tempdir().unwrap(),
        }
    }

    /// The working folder.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The binary with a clean environment, run in the working folder.
    pub fn cmd(&self) -> Command {
        let mut cmd = Command::cargo_bin("autotriage").unwrap();
        cmd.current_dir(self.dir.path())
            .env_clear()
            .env("HOME", self.home.path())
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("NO_COLOR", "1");
        cmd
    }

    /// Run with arguments; return the output.
    pub fn run(&self, args: &[&str]) -> Output {
        self.cmd().args(args).output().unwrap()
    }

    /// Write a file under the working folder.
    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.dir.path().join(name);
        if let Some(d) = p.parent() {
            std::fs::create_dir_all(d).unwrap();
        }
        std::fs::write(&p, text).unwrap();
        p
    }

    /// Make the working folder a git repository with an `origin`.
    pub fn git_init(&self, origin: &str) {
        let repo = git2::Repository::init(self.dir.path()).unwrap();
        repo.remote("origin", origin).unwrap();
    }

    /// The default memory file.
    pub fn memory_path(&self) -> PathBuf {
        self.dir.path().join(".autotriage/memory.sqlite3")
    }
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

pub fn code(o: &Output) -> i32 {
    o.status.code().unwrap_or(-1)
}

/// Parse stdout as one JSON document.
pub fn json(o: &Output) -> serde_json::Value {
    serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {}", stdout(o)))
}

/// A free loopback port.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// True when a missing emulator must fail the test (CI, or asked for).
pub fn emulators_required() -> bool {
    std::env::var("AUTOTRIAGE_REQUIRE_EMULATORS").is_ok_and(|v| v == "1")
        || std::env::var("CI").is_ok_and(|v| v == "true")
}

/// An emulator process started by a test, killed when dropped.
pub struct Emulator {
    child: std::process::Child,
    pub url: String,
}

impl Drop for Emulator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Emulator {
    /// Start `program` with `env` (its port in `port_var`); wait until it accepts
    /// connections. `None` (a skip) when it is not installed, unless emulators are
    /// required, which makes a missing one a failure.
    pub fn start(
        program: &str,
        args: &[&str],
        port_var: &str,
        env: &[(&str, String)],
    ) -> Option<Self> {
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect();
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        Self::start_on(program, &|port| {
            let mut env = env.clone();
            env.push((port_var.to_string(), port.to_string()));
            (args.clone(), env)
        })
    }

    /// `moto_server` (PyPI `moto[server]`: S3, DynamoDB, CodeBuild) on a free port.
    pub fn moto() -> Option<Self> {
        Self::start_on("moto_server", &|port| {
            (vec!["-p".into(), port.to_string()], Vec::new())
        })
    }

    /// Start `program` with the arguments and environment `setup` gives for a port.
    pub fn start_on(
        program: &str,
        setup: &dyn Fn(u16) -> (Vec<String>, Vec<(String, String)>),
    ) -> Option<Self> {
        let port = free_port();
        let (args, env) = setup(port);
        let mut cmd = std::process::Command::new(program);
        cmd.args(&args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => {
                assert!(
                    !emulators_required(),
                    "{program} is required here (CI or AUTOTRIAGE_REQUIRE_EMULATORS=1) but could not start: {e}"
                );
                eprintln!(
                    "skipping: {program} is not installed ({e}); `pip install {program}` runs this test"
                );
                return None;
            }
        };
        let emulator = Emulator {
            child,
            url: format!("http://127.0.0.1:{port}"),
        };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "{program} did not listen on port {port} within 60 s"
            );
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        Some(emulator)
    }
}

/// A scripted HTTP server (wiremock) on its own runtime, for tests that run the
/// binary synchronously.
pub struct HttpMock {
    pub rt: tokio::runtime::Runtime,
    pub server: wiremock::MockServer,
}

impl HttpMock {
    pub fn start() -> Self {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let server = rt.block_on(wiremock::MockServer::start());
        Self { rt, server }
    }

    pub fn mount(&self, mock: wiremock::Mock) {
        self.rt.block_on(mock.mount(&self.server));
    }

    pub fn requests(&self) -> Vec<wiremock::Request> {
        self.rt
            .block_on(self.server.received_requests())
            .unwrap_or_default()
    }

    /// The JSON bodies received, in order.
    pub fn bodies(&self) -> Vec<serde_json::Value> {
        self.requests()
            .iter()
            .map(|r| serde_json::from_slice(&r.body).unwrap_or(serde_json::Value::Null))
            .collect()
    }
}

/// Commit files (written first) to the repository in `dir`, creating it when needed;
/// paths are added even when `.gitignore` matches them. Returns the commit.
pub fn commit_files(dir: &Path, files: &[(&str, &str)], message: &str) -> git2::Oid {
    let repo = git2::Repository::open(dir).unwrap_or_else(|_| git2::Repository::init(dir).unwrap());
    let mut index = repo.index().unwrap();
    for (name, text) in files {
        let p = dir.join(name);
        if let Some(d) = p.parent() {
            std::fs::create_dir_all(d).unwrap();
        }
        std::fs::write(&p, text).unwrap();
        index.add_path(Path::new(name)).unwrap();
    }
    index.write().unwrap();
    let tree = repo.find_tree(index.write_tree().unwrap()).unwrap();
    let sig = git2::Signature::now("t", "t@example.com").unwrap();
    let parent = repo.head().ok().and_then(|h| h.peel_to_commit().ok());
    let parents: Vec<&git2::Commit<'_>> = parent.iter().collect();
    repo.commit(Some("HEAD"), &sig, &sig, message, &tree, &parents)
        .unwrap()
}
