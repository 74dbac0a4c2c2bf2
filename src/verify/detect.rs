//! Which test command a repository uses, what kind of runner it is, and how to ask it
//! for per-test results and for a subset of tests.

use serde::{Deserialize, Serialize};

/// The test runners whose results can be read per test.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Flavor {
    /// `cargo test` / `cargo nextest run`.
    Cargo,
    /// pytest (`python -m pytest`, `pytest`).
    Pytest,
    /// `go test`.
    Go,
    /// `npm test`, `yarn test`, `jest`…
    Node,
    /// Anything else: the exit code is the only result.
    Other,
}

/// What the files at the top of a repository say about its tests.
pub fn detect(read: &dyn Fn(&str) -> Option<String>) -> Option<String> {
    if read("Cargo.toml").is_some() {
        return Some("cargo test".into());
    }
    if read("pytest.ini").is_some()
        || read("pyproject.toml").is_some()
        || read("setup.cfg").is_some()
        || read("tox.ini").is_some()
        || read("setup.py").is_some()
    {
        return Some("python3 -m pytest".into());
    }
    if let Some(pkg) = read("package.json")
        && let Ok(v) = serde_json::from_str::<serde_json::Value>(&pkg)
        && v["scripts"]["test"].is_string()
    {
        return Some("npm test".into());
    }
    if read("go.mod").is_some() {
        return Some("go test ./...".into());
    }
    for name in ["Makefile", "makefile", "GNUmakefile"] {
        if let Some(text) = read(name)
            && text
                .lines()
                .any(|l| l.starts_with("test:") || l.starts_with("test :"))
        {
            return Some("make test".into());
        }
    }
    None
}

/// The files `detect` looks at, for the "none found" message.
pub const DETECTED_FROM: &str = "Cargo.toml, pytest.ini/pyproject.toml/setup.cfg/tox.ini/setup.py, package.json with scripts.test, go.mod, a Makefile with a `test` target";

/// The runner a command line invokes.
pub fn flavor(command: &str) -> Flavor {
    let words: Vec<&str> = command.split_whitespace().collect();
    let has = |w: &str| words.contains(&w);
    if has("cargo") && (has("test") || has("nextest")) {
        Flavor::Cargo
    } else if has("pytest") || has("py.test") {
        Flavor::Pytest
    } else if has("go") && has("test") {
        Flavor::Go
    } else if has("npm") || has("yarn") || has("pnpm") || has("jest") || has("npx") {
        Flavor::Node
    } else {
        Flavor::Other
    }
}

/// The command with the options that make its runner report per test: pytest writes
/// JUnit XML to `$AUTOTRIAGE_JUNIT`, `go test` prints JSON events. `targets` narrows
/// the run to some test files (pytest) or packages (go).
pub fn instrument(command: &str, flavor: Flavor, targets: &[String]) -> String {
    let quoted: Vec<String> = targets.iter().map(|t| shell_quote(t)).collect();
    match flavor {
        Flavor::Pytest => {
            let mut c = format!("{command} -rA --junitxml=\"$AUTOTRIAGE_JUNIT\"");
            if !quoted.is_empty() {
                c.push(' ');
                c.push_str(&quoted.join(" "));
            }
            c
        }
        Flavor::Go => {
            let mut c = command.to_string();
            if !command.split_whitespace().any(|w| w == "-json") {
                c = c.replacen("go test", "go test -json", 1);
            }
            if !quoted.is_empty() {
                // The packages replace `./...`.
                c = c.replace(" ./...", "");
                c.push(' ');
                c.push_str(&quoted.join(" "));
            }
            c
        }
        _ => command.to_string(),
    }
}

/// Quote for `sh` when needed.
pub fn shell_quote(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-+=:,@".contains(c))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

/// A test file by its path: `tests/…`, `test_x.py`, `x_test.py`, `x_test.go`,
/// `x.test.ts`, `x.spec.js`, `src/…/tests.rs`.
pub fn is_test_file(path: &str) -> bool {
    let lower = path.to_ascii_lowercase();
    let name = lower.rsplit('/').next().unwrap_or(&lower);
    let in_test_dir = lower
        .split('/')
        .rev()
        .skip(1)
        .any(|d| matches!(d, "test" | "tests" | "__tests__" | "spec"));
    in_test_dir
        || (name.starts_with("test_") && name.ends_with(".py"))
        || name.ends_with("_test.py")
        || name.ends_with("_test.go")
        || name.contains(".test.")
        || name.contains(".spec.")
        || name == "tests.rs"
        || name == "conftest.py"
}

/// A test file, test data, or how tests run (`conftest.py`, `pytest.ini`, `tox.ini`,
/// `setup.cfg`, a Makefile, jest and mocha config): what a candidate's "tests only"
/// part holds.
pub fn is_test_support(path: &str) -> bool {
    let lower = path.to_ascii_lowercase();
    let name = lower.rsplit('/').next().unwrap_or(&lower);
    is_test_file(path)
        || lower
            .split('/')
            .rev()
            .skip(1)
            .any(|d| matches!(d, "testdata" | "test_data" | "fixtures"))
        || matches!(
            name,
            "pytest.ini" | "tox.ini" | "setup.cfg" | "noxfile.py" | "makefile" | "gnumakefile"
        )
        || name.starts_with("jest.config")
        || name.starts_with(".mocharc")
}

/// The tests to run first for a change: for pytest, the test files the change touches
/// and those that name a changed module; for go, the changed packages. Empty when the
/// runner cannot be narrowed (then the suite runs at once).
pub fn targets(
    flavor: Flavor,
    changed: &[String],
    all_files: &[String],
    read: &dyn Fn(&str) -> Option<String>,
) -> Vec<String> {
    match flavor {
        Flavor::Pytest => {
            let mut out: Vec<String> = changed
                .iter()
                .filter(|p| is_test_file(p) && p.ends_with(".py") && !p.ends_with("conftest.py"))
                .cloned()
                .collect();
            let modules: Vec<String> = changed
                .iter()
                .filter(|p| p.ends_with(".py") && !is_test_file(p))
                .filter_map(|p| {
                    let stem = p.rsplit('/').next()?.trim_end_matches(".py");
                    if stem == "__init__" {
                        p.rsplit('/').nth(1).map(String::from)
                    } else {
                        Some(stem.to_string())
                    }
                })
                .collect();
            for f in all_files {
                if out.contains(f) || !is_test_file(f) || !f.ends_with(".py") {
                    continue;
                }
                let name = f.rsplit('/').next().unwrap_or(f);
                if name == "conftest.py" || name == "__init__.py" {
                    continue;
                }
                let Some(text) = read(f) else { continue };
                if modules.iter().any(|m| mentions_word(&text, m)) {
                    out.push(f.clone());
                }
            }
            out
        }
        Flavor::Go => {
            let mut pkgs: Vec<String> = changed
                .iter()
                .filter(|p| p.ends_with(".go"))
                .map(|p| match p.rfind('/') {
                    Some(i) => format!("./{}", &p[..i]),
                    None => ".".to_string(),
                })
                .collect();
            pkgs.sort();
            pkgs.dedup();
            pkgs
        }
        _ => Vec::new(),
    }
}

fn mentions_word(text: &str, word: &str) -> bool {
    text.match_indices(word).any(|(i, _)| {
        let before = text[..i].chars().next_back();
        let after = text[i + word.len()..].chars().next();
        let boundary = |c: Option<char>| c.is_none_or(|c| !(c.is_alphanumeric() || c == '_'));
        boundary(before) && boundary(after)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_are_detected_from_the_files_present() {
        let with = |files: &'static [(&'static str, &'static str)]| {
            detect(&move |p: &str| {
                files
                    .iter()
                    .find(|(n, _)| *n == p)
                    .map(|(_, t)| t.to_string())
            })
        };
        assert_eq!(
            with(&[("Cargo.toml", "[package]")]).as_deref(),
            Some("cargo test")
        );
        assert_eq!(
            with(&[("setup.cfg", "")]).as_deref(),
            Some("python3 -m pytest")
        );
        assert_eq!(
            with(&[("package.json", r#"{"scripts":{"test":"jest"}}"#)]).as_deref(),
            Some("npm test")
        );
        assert_eq!(with(&[("package.json", r#"{"name":"x"}"#)]), None);
        assert_eq!(
            with(&[("go.mod", "module x")]).as_deref(),
            Some("go test ./...")
        );
        assert_eq!(
            with(&[("Makefile", "all:\n\ttrue\ntest: all\n\t./t.sh\n")]).as_deref(),
            Some("make test")
        );
        assert_eq!(with(&[("README.md", "")]), None);
    }

    #[test]
    fn pytest_and_go_are_asked_for_per_test_results_and_narrowed() {
        assert_eq!(
            instrument(
                "python3 -m pytest",
                Flavor::Pytest,
                &["tests/test_a.py".into()]
            ),
            "python3 -m pytest -rA --junitxml=\"$AUTOTRIAGE_JUNIT\" tests/test_a.py"
        );
        assert_eq!(
            instrument("go test ./...", Flavor::Go, &["./pkg/x".into()]),
            "go test -json ./pkg/x"
        );
        assert_eq!(instrument("cargo test", Flavor::Cargo, &[]), "cargo test");
        assert_eq!(flavor("python -m pytest -x"), Flavor::Pytest);
        assert_eq!(flavor("cargo nextest run"), Flavor::Cargo);
        assert_eq!(flavor("./run-tests.sh"), Flavor::Other);
    }

    #[test]
    fn targeted_tests_are_the_changed_ones_and_those_naming_a_changed_module() {
        let files: Vec<String> = [
            "calc/parse.py",
            "tests/test_parse.py",
            "tests/test_other.py",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let read = |p: &str| match p {
            "tests/test_parse.py" => Some("from calc.parse import tokens\n".to_string()),
            "tests/test_other.py" => Some("import calc.parser_two\n".to_string()),
            _ => None,
        };
        assert_eq!(
            targets(Flavor::Pytest, &["calc/parse.py".into()], &files, &read),
            vec!["tests/test_parse.py".to_string()]
        );
        assert!(is_test_file("tests/test_parse.py"));
        assert!(is_test_file("pkg/x_test.go"));
        assert!(!is_test_file("src/contest.py"));
    }
}
