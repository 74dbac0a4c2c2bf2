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
