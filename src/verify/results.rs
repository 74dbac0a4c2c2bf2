//! Per-test results from what a runner leaves behind: JUnit XML, `go test -json`
//! events, cargo test and nextest lines, pytest's `-rA` summary; the exit code last.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// One test's result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// Passed.
    Passed,
    /// Failed or errored.
    Failed,
    /// Skipped or ignored.
    Skipped,
}

/// The name of the one pseudo-test that stands for the exit code when no per-test
/// result could be read, or when the command failed with no test failing.
pub const EXIT_CODE_TEST: &str = "(exit code)";

/// The results of one run of the test command.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Results {
    /// Where the results came from: `junit`, `go-json`, `cargo`, `nextest`, `pytest`,
    /// `exit code`.
    pub source: String,
    /// Test id → outcome.
    pub tests: BTreeMap<String, Outcome>,
}

impl Results {
    /// Ids of the tests with this outcome.
    pub fn with(&self, outcome: Outcome) -> Vec<&str> {
        self.tests
            .iter()
            .filter(|(_, o)| **o == outcome)
            .map(|(k, _)| k.as_str())
            .collect()
    }
}

/// Read the results of a run: JUnit XML when the runner wrote it, else the output,
/// else the exit code alone.
pub fn read(junit: Option<&str>, output: &str, exit_ok: bool) -> Results {
    let mut r = junit
        .and_then(parse_junit)
        .or_else(|| parse_go_json(output))
        .or_else(|| parse_nextest(output))
        .or_else(|| parse_cargo(output))
        .or_else(|| parse_pytest_summary(output))
        .unwrap_or_else(|| Results {
            source: "exit code".into(),
            tests: BTreeMap::new(),
        });
    let failed = r.tests.values().any(|o| *o == Outcome::Failed);
    if r.tests.is_empty() || (!exit_ok && !failed) {
        r.tests.insert(
            EXIT_CODE_TEST.into(),
            if exit_ok {
                Outcome::Passed
            } else {
                Outcome::Failed
            },
        );
    }
    r
}

/// JUnit XML (pytest `--junitxml`, jest-junit, surefire…): `classname::name`.
pub fn parse_junit(xml: &str) -> Option<Results> {
    let doc = roxmltree::Document::parse(xml).ok()?;
    let mut tests = BTreeMap::new();
    for case in doc.descendants().filter(|n| n.has_tag_name("testcase")) {
        let name = case.attribute("name").unwrap_or("");
        let id = match case.attribute("classname").filter(|c| !c.is_empty()) {
            Some(c) => format!("{c}::{name}"),
            None => name.to_string(),
        };
        let child = |tag: &str| case.children().any(|c| c.has_tag_name(tag));
        let outcome = if child("failure") || child("error") {
            Outcome::Failed
        } else if child("skipped") {
            Outcome::Skipped
        } else {
            Outcome::Passed
        };
        merge(&mut tests, id, outcome);
    }
    (!tests.is_empty()).then(|| Results {
        source: "junit".into(),
        tests,
    })
}

/// `go test -json`: `Package::Test` from the pass/fail/skip events.
pub fn parse_go_json(output: &str) -> Option<Results> {
    let mut tests = BTreeMap::new();
    for line in output.lines().filter(|l| l.starts_with('{')) {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let (Some(action), Some(test)) = (v["Action"].as_str(), v["Test"].as_str()) else {
            continue;
        };
        let outcome = match action {
            "pass" => Outcome::Passed,
            "fail" => Outcome::Failed,
            "skip" => Outcome::Skipped,
            _ => continue,
        };
        let id = format!("{}::{test}", v["Package"].as_str().unwrap_or(""));
        merge(&mut tests, id, outcome);
    }
    (!tests.is_empty()).then(|| Results {
        source: "go-json".into(),
        tests,
    })
}

/// `cargo test`: `test name ... ok|FAILED|ignored`, prefixed with the target that ran
/// it (`src/lib.rs`, `tests/api.rs`, `doc`), since names repeat across targets.
pub fn parse_cargo(output: &str) -> Option<Results> {
    let mut tests = BTreeMap::new();
    let mut target = String::new();
    for line in output.lines() {
        let t = line.trim();
        if let Some(rest) = t.strip_prefix("Running ") {
            // `Running unittests src/lib.rs (target/debug/deps/x-123)`
            let rest = rest.strip_prefix("unittests ").unwrap_or(rest);
            target = rest.split(" (").next().unwrap_or(rest).to_string();
            continue;
        }
        if t.starts_with("Doc-tests ") {
            target = "doc".into();
            continue;
        }
        let Some(rest) = t.strip_prefix("test ") else {
            continue;
        };
        let Some((name, result)) = rest.rsplit_once(" ... ") else {
            continue;
        };
        let outcome = match result.split([' ', ',']).next() {
            Some("ok") => Outcome::Passed,
            Some("FAILED") => Outcome::Failed,
            Some("ignored") => Outcome::Skipped,
            _ => continue,
        };
        let id = if target.is_empty() {
            name.to_string()
        } else {
            format!("{target}::{name}")
        };
        merge(&mut tests, id, outcome);
    }
    (!tests.is_empty()).then(|| Results {
        source: "cargo".into(),
        tests,
    })
}

/// `cargo nextest run`: `PASS [ 0.004s] crate::bin module::test`.
pub fn parse_nextest(output: &str) -> Option<Results> {
    let mut tests = BTreeMap::new();
    for line in output.lines() {
        let t = line.trim_start();
        let Some((status, rest)) = t.split_once(' ') else {
            continue;
        };
        let outcome = match status {
            "PASS" => Outcome::Passed,
            "FAIL" | "SIGSEGV" | "SIGABRT" | "TIMEOUT" | "LEAK-FAIL" => Outcome::Failed,
            "SKIP" => Outcome::Skipped,
            _ => continue,
        };
        let rest = rest.trim_start();
        if !rest.starts_with('[') {
            continue;
        }
        let Some(close) = rest.find(']') else {
            continue;
        };
        let id = rest[close + 1..].trim();
        if id.is_empty() {
            continue;
        }
        merge(
            &mut tests,
            id.split_whitespace().collect::<Vec<_>>().join(" "),
            outcome,
        );
    }
    (!tests.is_empty()).then(|| Results {
        source: "nextest".into(),
        tests,
    })
}

/// pytest's `-rA` short summary: `PASSED tests/a.py::test_x`, `FAILED … - reason`.
pub fn parse_pytest_summary(output: &str) -> Option<Results> {
    let mut tests = BTreeMap::new();
    for line in output.lines() {
        let Some((status, rest)) = line.split_once(' ') else {
            continue;
        };
        let outcome = match status {
            "PASSED" | "XFAIL" => Outcome::Passed,
            "FAILED" | "ERROR" | "XPASS" => Outcome::Failed,
            "SKIPPED" => Outcome::Skipped,
            _ => continue,
        };
        let id = rest.split(" - ").next().unwrap_or(rest).trim();
        if !id.contains("::") {
            continue;
        }
        merge(&mut tests, id.to_string(), outcome);
    }
    (!tests.is_empty()).then(|| Results {
        source: "pytest".into(),
        tests,
    })
}

/// A test reported twice (parametrised or re-run) fails if any report failed.
fn merge(tests: &mut BTreeMap<String, Outcome>, id: String, outcome: Outcome) {
    let e = tests.entry(id).or_insert(outcome);
    if outcome == Outcome::Failed || *e == Outcome::Skipped {
        *e = outcome;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn junit_cases_with_failures_errors_and_skips() {
        let xml = r#"<?xml version="1.0"?><testsuites><testsuite name="pytest">
<testcase classname="tests.test_calc" name="test_add" time="0.01"/>
<testcase classname="tests.test_calc" name="test_div"><failure message="boom">x</failure></testcase>
<testcase classname="tests.test_calc" name="test_io"><error message="e"/></testcase>
<testcase classname="tests.test_calc" name="test_slow"><skipped/></testcase>
</testsuite></testsuites>"#;
        let r = read(Some(xml), "", false);
        assert_eq!(r.source, "junit");
        assert_eq!(r.with(Outcome::Passed), vec!["tests.test_calc::test_add"]);
        assert_eq!(
            r.with(Outcome::Failed),
            vec!["tests.test_calc::test_div", "tests.test_calc::test_io"]
        );
        assert_eq!(r.with(Outcome::Skipped), vec!["tests.test_calc::test_slow"]);
    }

    #[test]
    fn cargo_lines_are_named_by_their_target() {
        let out = "   Compiling x v0.1.0\n     Running unittests src/lib.rs (target/debug/deps/x-1)\n\nrunning 2 tests\ntest tests::adds ... ok\ntest tests::divides ... FAILED\n\n     Running tests/api.rs (target/debug/deps/api-2)\ntest adds ... ok\ntest slow ... ignored, needs a db\n   Doc-tests x\ntest src/lib.rs - add (line 3) ... ok\n";
        let r = read(None, out, false);
        assert_eq!(r.source, "cargo");
        assert_eq!(r.tests["src/lib.rs::tests::adds"], Outcome::Passed);
        assert_eq!(r.tests["src/lib.rs::tests::divides"], Outcome::Failed);
        assert_eq!(r.tests["tests/api.rs::adds"], Outcome::Passed);
        assert_eq!(r.tests["tests/api.rs::slow"], Outcome::Skipped);
        assert_eq!(
            r.tests.get("doc::src/lib.rs - add (line 3)"),
            Some(&Outcome::Passed),
            "{:?}",
            r.tests
        );
        assert!(!r.tests.contains_key(EXIT_CODE_TEST));
    }

    #[test]
    fn nextest_go_and_pytest_summaries() {
        let r = read(
            None,
            "        PASS [   0.004s] x tests::a\n        FAIL [   0.010s] x tests::b\n",
            false,
        );
        assert_eq!(r.source, "nextest");
        assert_eq!(r.tests["x tests::b"], Outcome::Failed);
        let go = "{\"Action\":\"run\",\"Package\":\"m/p\",\"Test\":\"TestA\"}\n{\"Action\":\"pass\",\"Package\":\"m/p\",\"Test\":\"TestA\"}\n{\"Action\":\"fail\",\"Package\":\"m/p\",\"Test\":\"TestB\"}\n{\"Action\":\"fail\",\"Package\":\"m/p\"}\n";
        let r = read(None, go, false);
        assert_eq!(r.source, "go-json");
        assert_eq!(r.tests.len(), 2);
        assert_eq!(r.tests["m/p::TestB"], Outcome::Failed);
        let py = "=== short test summary info ===\nPASSED tests/test_a.py::test_x\nFAILED tests/test_a.py::test_y - assert 1 == 2\n";
        let r = read(None, py, false);
        assert_eq!(r.source, "pytest");
        assert_eq!(r.tests["tests/test_a.py::test_y"], Outcome::Failed);
    }

    #[test]
    fn the_exit_code_stands_in_when_nothing_else_reports() {
        let r = read(None, "make: *** [test] Error 1\n", false);
        assert_eq!(r.source, "exit code");
        assert_eq!(r.tests[EXIT_CODE_TEST], Outcome::Failed);
        // Per-test results that all passed, with a failing exit: the exit code counts.
        let r = read(None, "test a ... ok\n", false);
        assert_eq!(r.tests[EXIT_CODE_TEST], Outcome::Failed);
        let r = read(None, "test a ... ok\n", true);
        assert!(!r.tests.contains_key(EXIT_CODE_TEST));
    }
}
