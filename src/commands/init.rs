//! `autotriage init`: a commented `autotriage.yaml` for this checkout, and
//! `.autotriage/` in `.gitignore`.

use std::path::Path;

use anyhow::Result;
use serde_json::json;

use super::Output;
use crate::cli::{GlobalArgs, InitArgs};
use crate::config::FILE_NAME;
use crate::error::CommandError;
use crate::runs::fs::write_atomic;
use crate::workspace::{STATE_DIR, Workspace};

/// The documented example, the template for `init`.
pub const EXAMPLE: &str = include_str!("../../autotriage.example.yaml");

/// Guess the test command from the files present.
pub fn guess_test_command(root: &Path) -> Option<&'static str> {
    let has = |name: &str| root.join(name).exists();
    if has("Cargo.toml") {
        Some("cargo test")
    } else if has("pyproject.toml")
        || has("setup.cfg")
        || has("pytest.ini")
        || has("setup.py")
        || has("tox.ini")
    {
        Some("python -m pytest")
    } else if has("package.json") {
        Some("npm test")
    } else if has("go.mod") {
        Some("go test ./...")
    } else if std::fs::read_to_string(root.join("Makefile")).is_ok_and(|m| {
        m.lines()
            .any(|l| l.starts_with("test:") || l.starts_with("test "))
    }) {
        Some("make test")
    } else {
        None
    }
}

/// What the whole suite costs per candidate, and a narrower command to consider.
pub fn narrowing_advice(root: &Path, test: Option<&str>) -> Option<String> {
    let test = test?;
    let folder = ["tests", "test", "testing"]
        .into_iter()
        .find(|d| root.join(d).is_dir());
    let narrow = match (test.contains("pytest"), folder) {
        (true, Some(d)) => format!(
            "e.g. `{test} {d} -q -p no:cacheprovider`, or the folder nearest the code you fix"
        ),
        _ => "name the tests nearest the code you fix".to_string(),
    };
    Some(format!(
        "note: `fix` runs this command up to 4 times per candidate (its targeted tests, the suite, a re-run when something broke, the base with only its test changes) and the base once or twice; when the whole suite is slow, narrow test.command: {narrow}"
    ))
}

/// The config text for a checkout.
pub fn render(repo: Option<&str>, test_command: Option<&str>) -> String {
    let mut out = String::new();
    let mut in_test = false;
    for line in EXAMPLE.lines() {
        if !line.starts_with(' ') && !line.starts_with('#') && !line.is_empty() {
            in_test = line.starts_with("test:");
        }
        if line.starts_with("repo: ") {
            match repo {
                Some(r) => out.push_str(&format!("repo: {r}")),
                None => out.push_str("# repo: owner/name   (no GitHub `origin` found; set it to use #123 references)"),
            }
        } else if in_test && line.starts_with("  command:") {
            match test_command {
                Some(c) => out.push_str(&format!(
                    "  command: {c}            # guessed from the files present"
                )),
                None => out.push_str(line),
            }
        } else {
            out.push_str(line);
        }
        out.push('\n');
    }
    out
}

/// Write the config and the ignore entry.
pub fn run(
    _args: &InitArgs,
    global: &GlobalArgs,
    workspace: &Workspace,
    out: &Output,
) -> Result<()> {
    let root = workspace.root();
    let target = root.join(FILE_NAME);
    if target.exists() && !global.force {
        return Err(CommandError::usage(format!(
            "{} already exists; nothing was written\n  fix: edit it, or run `autotriage init --force` to replace it",
            target.display()
        ))
        .into());
    }
    let repo = workspace.origin.as_ref().map(|r| r.slug());
    let test = guess_test_command(root);
    let text = render(repo.as_deref(), test);

    let gitignore = root.join(".gitignore");
    let existing = std::fs::read_to_string(&gitignore).unwrap_or_default();
    let ignored = existing.lines().any(|l| {
        let l = l.trim().trim_start_matches('/');
        l == STATE_DIR || l == format!("{STATE_DIR}/")
    });

    if global.dry_run && global.json {
        out.json(&json!({"dry_run": true, "config": target.display().to_string(), "text": text, "gitignore_updated": false, "would_update_gitignore": !ignored}));
        return Ok(());
    }
    if global.dry_run {
        out.info(&format!(
            "dry run: would write {} and {}",
            target.display(),
            if ignored {
                "leave .gitignore as it is"
            } else {
                "add .autotriage/ to .gitignore"
            }
        ));
        out.line(&text);
        return Ok(());
    }
    write_atomic(&target, text.as_bytes())
        .map_err(|e| CommandError::failure(format!("cannot write {}: {e}", target.display())))?;
    if !ignored {
        let mut new = existing.clone();
        if !new.is_empty() && !new.ends_with('\n') {
            new.push('\n');
        }
        new.push_str(&format!("{STATE_DIR}/\n"));
        write_atomic(&gitignore, new.as_bytes()).map_err(|e| {
            CommandError::failure(format!("cannot write {}: {e}", gitignore.display()))
        })?;
    }
    if global.json {
        out.json(&json!({
            "config": target.display().to_string(),
            "repo": repo,
            "test_command": test,
            "gitignore_updated": !ignored,
        }));
    } else {
        out.line(&format!("wrote {}", target.display()));
        out.line(&format!(
            "  repo: {}",
            repo.as_deref().unwrap_or("(not found: no GitHub origin)")
        ));
        out.line(&format!(
            "  test command: {}",
            test.unwrap_or("(none detected; set test.command)")
        ));
        if let Some(advice) = narrowing_advice(root, test) {
            out.line(&format!("  {advice}"));
        }
        if !ignored {
            out.line(&format!("added {STATE_DIR}/ to {}", gitignore.display()));
        }
    }
    Ok(())
}
