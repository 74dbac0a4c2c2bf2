//! Sandbox overhead per test run: the same command run directly, through the sandbox
//! without bubblewrap, and inside bubblewrap; and the cost of a throwaway worktree.
//!
//! `cargo bench --bench sandbox_overhead [-- REPO_DIR]` (release build; not run in CI).

use std::path::Path;
use std::time::{Duration, Instant};

use autotriage::verify::sandbox::{Sandbox, find_on_path};

const RUNS: usize = 40;

fn stats(label: &str, mut ms: Vec<f64>) -> f64 {
    ms.sort_by(f64::total_cmp);
    let median = ms[ms.len() / 2];
    let p90 = ms[ms.len() * 9 / 10];
    println!("{label:<52} median {median:7.2} ms   p90 {p90:7.2} ms   ({RUNS} runs)");
    median
}

fn time(f: &mut dyn FnMut()) -> Vec<f64> {
    (0..RUNS)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64() * 1000.0
        })
        .collect()
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let stop = || false;
    let plain = Sandbox {
        bwrap: None,
        pass_env: vec![],
        writable: vec![],
        readable: vec![],
        network: false,
    };
    let boxed = find_on_path("bwrap").map(|b| Sandbox {
        bwrap: Some(b),
        pass_env: vec![],
        writable: vec![],
        readable: vec![],
        network: false,
    });
    for script in ["true", "/bin/ls -la /usr/bin"] {
        let direct = stats(
            &format!("`{script}` run directly (sh -c)"),
            time(&mut || {
                let _ = std::process::Command::new("sh")
                    .arg("-c")
                    .arg(script)
                    .current_dir(dir.path())
                    .output();
            }),
        );
        let unsandboxed = stats(
            "  through the sandbox, without bubblewrap",
            time(&mut || {
                let _ = plain.exec(dir.path(), script, &[], Duration::from_secs(60), &stop);
            }),
        );
        println!(
            "    overhead {:+.2} ms (env allow-list, process group, capture, kill)",
            unsandboxed - direct
        );
        match &boxed {
            Some(b) => {
                let sandboxed = stats(
                    "  inside bubblewrap (no network, read-only, PID ns)",
                    time(&mut || {
                        let _ = b.exec(dir.path(), script, &[], Duration::from_secs(60), &stop);
                    }),
                );
                println!(
                    "    overhead {:+.2} ms against running it directly",
                    sandboxed - direct
                );
            }
            None => println!("  bubblewrap is not installed: no sandboxed figure"),
        }
    }
    if let Some(repo_dir) = std::env::args().nth(1).filter(|a| !a.starts_with('-')) {
        let repo = git2::Repository::open(Path::new(&repo_dir))?;
        let head = repo.head()?.peel_to_commit()?.id();
        let files = autotriage::verify::tree_paths(&repo, head).len();
        let root = tempfile::tempdir()?;
        let mut n = 0;
        stats(
            &format!("throwaway worktree of {files} files: make + remove"),
            time(&mut || {
                n += 1;
                let wt = autotriage::verify::worktree::create(
                    &repo,
                    head,
                    &root.path().join(n.to_string()),
                );
                drop(wt);
            }),
        );
    }
    Ok(())
}
