//! The local runner: the setup and test commands on this machine, through
//! [`Sandbox`](super::sandbox::Sandbox).

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::sandbox::Sandbox;
use super::{RunOutput, Runner, VerifyError};

/// Runs in a worktree on this machine.
#[derive(Debug, Clone)]
pub struct LocalRunner {
    /// Isolation.
    pub sandbox: Sandbox,
    /// A build cache shared by the worktrees of one repository (`CARGO_TARGET_DIR`,
    /// `GOCACHE`), so each candidate does not build everything again; writable inside
    /// the sandbox too.
    pub build_cache: Option<(String, PathBuf)>,
    /// The setup command keeps the network (`test.setup_network`); the tests never do.
    pub setup_network: bool,
}

impl Runner for LocalRunner {
    fn describe(&self) -> String {
        if self.sandbox.bwrap.is_some() && self.setup_network {
            "local (bubblewrap, no network but for the setup)".into()
        } else if self.sandbox.bwrap.is_some() {
            "local (bubblewrap, no network)".into()
        } else {
            "local (unsandboxed)".into()
        }
    }

    fn sandboxed(&self) -> bool {
        self.sandbox.bwrap.is_some()
    }

    fn run(
        &self,
        dir: &Path,
        setup: Option<&str>,
        command: &str,
        timeout: Duration,
        stop: &(dyn Fn() -> bool + Sync),
    ) -> Result<RunOutput, VerifyError> {
        let junit = dir.join(".git/autotriage-junit.xml");
        let mut env = vec![("AUTOTRIAGE_JUNIT".to_string(), junit.display().to_string())];
        let mut sandbox = self.sandbox.clone();
        if let Some((var, t)) = &self.build_cache {
            std::fs::create_dir_all(t)
                .map_err(|e| VerifyError::Io(format!("{}: {e}", t.display())))?;
            env.push((var.clone(), t.display().to_string()));
            sandbox.writable.push(t.clone());
        }
        // Tools that cache under ~/.cache write into the worktree instead (HOME is
        // read-only in the sandbox).
        env.push((
            "XDG_CACHE_HOME".into(),
            dir.join(".git/xdg-cache").display().to_string(),
        ));
        // The objects the worktree borrows stay readable even under the private /tmp.
        if let Ok(alt) = std::fs::read_to_string(dir.join(".git/objects/info/alternates")) {
            sandbox
                .readable
                .extend(alt.lines().filter(|l| !l.is_empty()).map(PathBuf::from));
        }
        if let Some(venv) = std::env::var_os("VIRTUAL_ENV") {
            sandbox.readable.push(PathBuf::from(venv));
        }
        // An interpreter named by its path (`/tmp/venv/bin/python -m pytest`, a
        // `.venv` elsewhere): its whole environment, with the real prefix it links to.
        for cmd in [Some(command), setup].into_iter().flatten() {
            sandbox.readable.extend(program_roots(cmd));
        }
        let io = |e: std::io::Error| {
            VerifyError::Io(format!("could not run a command in {}: {e}", dir.display()))
        };
        let mut out = RunOutput::default();
        if let Some(s) = setup {
            let mut with_net = sandbox.clone();
            with_net.network = self.setup_network;
            let e = with_net.exec(dir, s, &env, timeout, stop).map_err(io)?;
            let ok = e.ok();
            out.setup = Some(e);
            if !ok {
                return Ok(out);
            }
        }
        let _ = std::fs::remove_file(&junit);
        out.test = Some(
            sandbox
                .exec(dir, command, &env, timeout, stop)
                .map_err(io)?,
        );
        out.junit = std::fs::read_to_string(&junit).ok();
        Ok(out)
    }
}

/// The environment folders of a command's program when it is named by an absolute
/// path: `/x/venv` for `/x/venv/bin/python` (a venv's `bin/python` links to its base
/// interpreter, whose prefix is added too).
fn program_roots(command: &str) -> Vec<PathBuf> {
    let Some(program) = command
        .split_whitespace()
        .find(|w| !w.contains('='))
        .map(PathBuf::from)
        .filter(|p| p.is_absolute() && p.exists())
    else {
        return Vec::new();
    };
    let root = |p: &std::path::Path| -> Option<PathBuf> {
        let bin = p.parent()?;
        match bin.file_name().and_then(|n| n.to_str()) {
            Some("bin" | "Scripts") => bin.parent().map(std::path::Path::to_path_buf),
            _ => Some(bin.to_path_buf()),
        }
    };
    let mut out: Vec<PathBuf> = root(&program).into_iter().collect();
    if let Ok(real) = std::fs::canonicalize(&program)
        && let Some(r) = root(&real)
        && !out.contains(&r)
    {
        out.push(r);
    }
    // Never the whole machine or the whole home folder (`~/bin/pytest`, `/pytest`):
    // only an environment folder of its own, and never a hidden credential folder.
    let home = std::env::var_os("HOME").map(PathBuf::from);
    out.retain(|r| {
        r.parent().is_some()
            && home.as_ref().is_none_or(|h| r != h && !h.starts_with(r))
            && !crate::verify::sandbox::is_hidden_credential(r)
    });
    out
}
