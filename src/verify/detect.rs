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

/// A test file by its path: `tests/…`, `testing/…` at the root, `test_x.py`, `x_test.py`, `x_test.go`,
/// `x.test.ts`, `x.spec.js`, `src/…/tests.rs`.
pub fn is_test_file(path: &str) -> bool {
    let lower = path.to_ascii_lowercase();
    let name = lower.rsplit('/').next().unwrap_or(&lower);
    let in_test_dir = lower
        .split('/')
        .rev()
        .skip(1)
        .any(|d| matches!(d, "test" | "tests" | "__tests__" | "spec"));
    // `testing/` holds tests at the root (pytest's own layout); deeper it is usually a
    // package of test helpers (`numpy/testing/`), which is code.
    let in_root_testing = lower.starts_with("testing/");
    in_test_dir
        || in_root_testing
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

/// True when a directory component of `path` is a test folder (`test`, `tests`,
/// `testing`, `__tests__`): targeted runs only pick files there, never a script at
/// the top named `test_something.py`.
fn under_test_folder(path: &str) -> bool {
    path.to_ascii_lowercase()
        .split('/')
        .rev()
        .skip(1)
        .any(|d| matches!(d, "test" | "tests" | "testing" | "__tests__"))
}

/// A file pytest collects by its default rules: `test_*.py` or `*_test.py`.
fn pytest_collects(path: &str) -> bool {
    let name = path.rsplit('/').next().unwrap_or(path);
    name.ends_with(".py") && (name.starts_with("test_") || name.ends_with("_test.py"))
}

/// The dotted module names a Python file is imported as: `pkg/sub/util.py` is
/// `pkg.sub.util` (and `sub.util` under a `src/` or `lib/` layout); a package's
/// `__init__.py` is the package.
fn module_names(path: &str) -> Vec<String> {
    let Some(stem) = path.strip_suffix(".py") else {
        return Vec::new();
    };
    let stem = stem.strip_suffix("/__init__").unwrap_or(stem);
    let dotted = stem.replace('/', ".");
    let mut out = vec![dotted.clone()];
    for prefix in ["src.", "lib."] {
        if let Some(rest) = dotted.strip_prefix(prefix) {
            out.push(rest.to_string());
        }
    }
    out
}

/// True when Python source imports `module` (or something inside it) by an import
/// statement: `import m`, `import m.x as y`, `from m import x`, `from m.x import y`,
/// `from parent import leaf`.
fn imports_module(text: &str, module: &str) -> bool {
    let inside = |name: &str| name == module || name.starts_with(&format!("{module}."));
    let (parent, leaf) = module.rsplit_once('.').unwrap_or(("", module));
    text.lines().any(|line| {
        let line = line.trim();
        if let Some(rest) = line.strip_prefix("import ") {
            return rest
                .split(',')
                .filter_map(|n| n.split_whitespace().next())
                .any(inside);
        }
        if let Some(rest) = line.strip_prefix("from ")
            && let Some((from, names)) = rest.split_once(" import ")
        {
            let from = from.trim();
            if inside(from) {
                return true;
            }
            if !parent.is_empty() && from == parent {
                return names
                    .trim_matches(|c| c == '(' || c == ')' || c == ' ' || c == '\\')
                    .split(',')
                    .filter_map(|n| n.split_whitespace().next())
                    .any(|n| n == leaf);
            }
        }
        false
    })
}

/// True when a test command already names what to run (test files or folders,
/// `file::test` ids, `-k`/`-m` selections, `go test` packages other than `./...`):
/// targets are then never appended, so nothing runs twice.
pub fn names_tests(command: &str) -> bool {
    runner_arguments(command).into_iter().any(|w| {
        matches!(w, "-k" | "-m")
            || w.starts_with("-k=")
            || w.starts_with("-m=")
            || (!w.starts_with('-')
                && (w.ends_with(".py") || w.contains("::") || (w.contains('/') && w != "./..."))
                && !w.starts_with('$'))
    })
}

/// The files and folders a test command names (`tests/test_x.py` of
/// `pytest tests/test_x.py::test_a`): whatever its name, such a file is a test file.
pub fn named_test_paths(command: &str) -> Vec<String> {
    runner_arguments(command)
        .into_iter()
        .filter(|w| !w.starts_with('-') && !w.starts_with('$') && *w != "./...")
        .map(|w| w.split("::").next().unwrap_or(w))
        .filter(|w| w.ends_with(".py") || w.contains('/'))
        .map(|w| w.trim_start_matches("./").trim_end_matches('/').to_string())
        .filter(|w| !w.is_empty())
        .collect()
}

/// The test runner's own arguments (after `pytest`, `python -m pytest`, `go test`, else
/// after the program), without the values of options that take one.
fn runner_arguments(command: &str) -> Vec<&str> {
    let words: Vec<&str> = command.split_whitespace().collect();
    let start = words
        .iter()
        .position(|w| *w == "pytest" || w.ends_with("/pytest") || *w == "py.test")
        .or_else(|| {
            words
                .windows(2)
                .position(|p| p == ["go", "test"])
                .map(|i| i + 1)
        })
        .map_or(1, |i| i + 1);
    let mut out = Vec::new();
    let mut previous = "";
    for w in words.iter().skip(start).copied() {
        // Options whose next word is their value, not a test to run.
        let option_value = matches!(
            previous,
            "-p" | "-c"
                | "-o"
                | "-W"
                | "-r"
                | "--ignore"
                | "--ignore-glob"
                | "--deselect"
                | "--rootdir"
                | "--confcutdir"
                | "--basetemp"
                | "--junitxml"
                | "--cov"
        );
        if !option_value {
            out.push(w);
        }
        previous = w;
    }
    out
}

/// The tests to run first for a change, from evidence rather than words. For
/// pytest: the test files the change adds or edits; the test files that mirror a
/// changed module (`test_util.py` for `util.py`); and the test files that import a
/// changed module — only files under a test folder that pytest collects. For go,
/// the changed packages. At most `max` (the changed tests first). Empty when the
/// runner cannot be narrowed (then the suite runs at once).
pub fn targets(
    flavor: Flavor,
    changed: &[String],
    all_files: &[String],
    read: &dyn Fn(&str) -> Option<String>,
    max: usize,
) -> Vec<String> {
    let mut out: Vec<String> = match flavor {
        Flavor::Pytest => {
            let mut out: Vec<String> = changed
                .iter()
                .filter(|p| pytest_collects(p) && (under_test_folder(p) || is_test_file(p)))
                .cloned()
                .collect();
            let sources: Vec<&String> = changed
                .iter()
                .filter(|p| p.ends_with(".py") && !is_test_file(p))
                .collect();
            let stems: Vec<String> = sources
                .iter()
                .filter_map(|p| {
                    let stem = p.rsplit('/').next()?.trim_end_matches(".py");
                    (stem != "__init__").then(|| stem.to_string())
                })
                .collect();
            let modules: Vec<String> = sources.iter().flat_map(|p| module_names(p)).collect();
            let candidates: Vec<&String> = all_files
                .iter()
                .filter(|f| under_test_folder(f) && pytest_collects(f) && !out.contains(f))
                .collect();
            // Mirrors first, then importers.
            for f in &candidates {
                let name = f.rsplit('/').next().unwrap_or(f);
                if stems
                    .iter()
                    .any(|s| name == format!("test_{s}.py") || name == format!("{s}_test.py"))
                {
                    out.push((*f).clone());
                }
            }
            for f in candidates {
                if out.contains(f) {
                    continue;
                }
                let Some(text) = read(f) else { continue };
                if modules.iter().any(|m| imports_module(&text, m)) {
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
    };
    out.truncate(max);
    out
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
    fn targeted_tests_come_from_evidence_not_words() {
        let files: Vec<String> = [
            "src/calc/util.py",
            "src/calc/parse.py",
            "tests/test_parse.py",
            "tests/test_other.py",
            "tests/unit/test_util.py",
            "tests/test_uses_util_as_a_word.py",
            "tests/test_from_parent.py",
            "test_release_script.py",
            "tests/helpers.py",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let read = |p: &str| match p {
            "tests/test_parse.py" => Some("from calc.parse import tokens\n".to_string()),
            "tests/test_other.py" => Some("import calc.parser_two\n".to_string()),
            "tests/test_uses_util_as_a_word.py" => {
                Some("# util is a word here\nutil = 1\nimport calcutil\n".to_string())
            }
            "tests/test_from_parent.py" => {
                Some("from calc import (\n    util,\n)\nfrom calc import util, parse\n".to_string())
            }
            "test_release_script.py" => Some("import calc.util\n".to_string()),
            "tests/helpers.py" => Some("import calc.util\n".to_string()),
            _ => None,
        };
        // A module named `util`: its mirror and its importers under tests/, never a
        // file that only says the word, a script at the top, or a helper pytest does
        // not collect.
        assert_eq!(
            targets(
                Flavor::Pytest,
                &["src/calc/util.py".into()],
                &files,
                &read,
                20
            ),
            vec![
                "tests/unit/test_util.py".to_string(),
                "tests/test_from_parent.py".to_string()
            ]
        );
        // The tests a change edits come first; the cap holds.
        assert_eq!(
            targets(
                Flavor::Pytest,
                &["src/calc/parse.py".into(), "tests/test_other.py".into()],
                &files,
                &read,
                1
            ),
            vec!["tests/test_other.py".to_string()]
        );
        assert!(is_test_file("tests/test_parse.py"));
        assert!(is_test_file("pkg/x_test.go"));
        assert!(!is_test_file("src/contest.py"));
    }

    #[test]
    fn a_command_that_names_its_tests_is_not_narrowed_again() {
        assert!(names_tests("python -m pytest tests/test_x.py"));
        assert!(names_tests("pytest -x tests/unit"));
        assert!(names_tests("pytest tests/test_x.py::test_a"));
        assert!(names_tests("python -m pytest -k parse"));
        assert!(!names_tests("python -m pytest"));
        assert!(!names_tests("python -m pytest -x -q -p no:cacheprovider"));
        assert!(!names_tests("go test ./..."));
        assert!(!names_tests("pytest --junitxml=$AUTOTRIAGE_JUNIT"));
        assert_eq!(
            named_test_paths("python -m pytest -p no:x testing/python/fixtures.py::T tests/ -q"),
            vec!["testing/python/fixtures.py", "tests"]
        );
        assert!(named_test_paths("python -m pytest -x").is_empty());
        assert!(is_test_file("testing/python/fixtures.py"));
        assert!(!is_test_file("numpy/testing/utils.py"));
    }
}
