//! Reproduction first: before repair, one request asks for a new test file that
//! reproduces the issue; it runs on the base (sandboxed, with the repository's own
//! command). It is kept when it fails there: "reproduced" when the failure shows the
//! exception or message the issue names, or an assertion on a value it names, and
//! "reproduced (unconfirmed)" otherwise; one that passes (or cannot run) is dropped.
//! A kept test is frozen: added to every candidate that brings no test of its own,
//! and a candidate that writes to its files is `suspect`.

use anyhow::Result;
use git2::{Oid, Repository};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{Deps, Emitter, What};
use crate::issue::Issue;
use crate::locate::Located;
use crate::model::session::Session;
use crate::model::usage::CallUsage;
use crate::repair::PathGuard;
use crate::repair::candidates::Candidate;
use crate::runs::fs::Run;
use crate::verify::results::Outcome;
use crate::verify::{CandidateInput, CandidateReport, Verdict, Verifier};

/// `reproduction.json`: whether and how the issue was reproduced.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reproduction {
    /// `reproduced`, `reproduced (unconfirmed)`, `dropped` or `not written`.
    pub status: String,
    /// What showed it, or why it was dropped.
    pub why: String,
    /// The test as a diff (new test files only); empty unless kept.
    pub diff: String,
    /// The files it writes: frozen, no candidate may change them.
    pub files: Vec<String>,
    /// Its tests that fail on the base.
    pub tests: Vec<String>,
    /// The model call.
    pub usage: Vec<CallUsage>,
}

impl Reproduction {
    /// Kept: it failed on the base.
    pub fn kept(&self) -> bool {
        self.status.starts_with("reproduced")
    }

    fn dropped(status: &str, why: impl Into<String>, usage: Vec<CallUsage>) -> Self {
        Self {
            status: status.into(),
            why: why.into(),
            diff: String::new(),
            files: Vec::new(),
            tests: Vec::new(),
            usage,
        }
    }
}

/// What the issue names that a reproducing failure should show: exception types,
/// error messages, and values (numbers and `code` spans).
#[derive(Debug, Default, PartialEq)]
pub struct Named {
    /// `ValueError`, `KeyError`…
    pub exceptions: Vec<String>,
    /// The text after `SomeError:` in the issue.
    pub messages: Vec<String>,
    /// Numbers and short `code` spans.
    pub values: Vec<String>,
}

/// Read what the issue names.
pub fn named(issue: &Issue) -> Named {
    let text = format!("{}\n{}", issue.title, issue.body);
    let mut n = Named::default();
    let push = |v: &mut Vec<String>, s: &str| {
        let s = s.trim();
        if !s.is_empty() && !v.iter().any(|x| x == s) {
            v.push(s.to_string());
        }
    };
    if let Ok(re) = regex::Regex::new(
        r"\b([A-Z][A-Za-z0-9_]*(?:Error|Exception|Exit|Interrupt))\b(?::\s*(.{4,160}))?",
    ) {
        for c in re.captures_iter(&text) {
            if &c[1] != "AssertionError" {
                push(&mut n.exceptions, &c[1]);
            }
            if let Some(m) = c.get(2) {
                push(&mut n.messages, m.as_str());
            }
        }
    }
    if let Ok(re) = regex::Regex::new(r"`([^`\n]{1,60})`") {
        for c in re.captures_iter(&text) {
            push(&mut n.values, &c[1]);
        }
    }
    if let Ok(re) = regex::Regex::new(r"(?:^|[^\w.])(-?\d+(?:\.\d+)?)\b") {
        for c in re.captures_iter(&text) {
            push(&mut n.values, &c[1]);
        }
    }
    n
}

/// Errors that say the test itself is broken (a typo, a missing import), not the code
/// under test: a reproduction failing with one the issue does not name is dropped.
const BROKEN_TEST: &[&str] = &[
    "NameError",
    "ImportError",
    "ModuleNotFoundError",
    "SyntaxError",
    "IndentationError",
    "fixture '",
    "ERROR collecting",
];

/// The lines of a failure that report it (pytest's `E ` lines, a traceback's last
/// line), not the echoed source of the test, which holds whatever values it names.
fn failure_lines(output: &str) -> Vec<&str> {
    output
        .lines()
        .filter(|l| {
            let t = l.trim_start();
            l.starts_with("E ")
                || t.starts_with("AssertionError")
                || t.contains("Error: ")
                || t.contains("Exception: ")
                || t.starts_with("FAILED ")
        })
        .collect()
}

/// Why a reproduction's failure says the test is broken rather than the code, if it
/// does.
pub fn broken(named: &Named, output: &str) -> Option<String> {
    let lines = failure_lines(output);
    BROKEN_TEST
        .iter()
        .find(|b| {
            lines.iter().any(|l| l.contains(*b))
                && !named
                    .exceptions
                    .iter()
                    .any(|e| e.as_str() == b.trim_end_matches(" '"))
        })
        .map(|b| {
            format!(
                "it fails with {}, a broken test rather than the bug",
                b.trim_end_matches(" '")
            )
        })
}

/// Does a failure's output show what the issue names? The reason when it does.
pub fn confirms(named: &Named, output: &str) -> Option<String> {
    let lines = failure_lines(output);
    let shown = lines.join("\n");
    if let Some(e) = named.exceptions.iter().find(|e| shown.contains(e.as_str())) {
        return Some(format!("it fails with {e}, which the issue names"));
    }
    if let Some(m) = named
        .messages
        .iter()
        .find(|m| m.len() >= 8 && shown.contains(m.as_str()))
    {
        return Some(format!(
            "it fails with the message the issue quotes ({m:?})"
        ));
    }
    let word = |line: &str, v: &str| {
        line.match_indices(v).any(|(i, _)| {
            let before = line[..i].chars().next_back();
            let after = line[i + v.len()..].chars().next();
            let edge =
                |c: Option<char>| c.is_none_or(|c| !(c.is_alphanumeric() || c == '_' || c == '.'));
            edge(before) && edge(after)
        })
    };
    for line in lines {
        let l = line.to_ascii_lowercase();
        if !(l.contains("assert") || l.contains("expected")) {
            continue;
        }
        if let Some(v) = named.values.iter().find(|v| word(line, v)) {
            return Some(format!(
                "an assertion fails on {v}, a value the issue names: {}",
                line.trim()
            ));
        }
    }
    None
}

/// Ask for the test, run it on the base and decide; writes `reproduction.json`.
#[allow(clippy::too_many_arguments)]
pub(super) fn reproduce(
    deps: &Deps<'_>,
    emit: &Emitter<'_>,
    session: &Session,
    issue: &Issue,
    located: &Located,
    repo: &Repository,
    base: Oid,
    guard: &PathGuard,
    run: &mut Run,
    spent: &mut f64,
) -> Result<Reproduction> {
    if let Ok(r) = run.read_json::<Reproduction>("reproduction.json") {
        return Ok(r);
    }
    let read = |p: &str| crate::locate::files::read_at(repo, base, p);
    let paths = crate::verify::tree_paths(repo, base);
    let tests: Vec<String> = paths
        .iter()
        .filter(|p| crate::verify::detect::is_test_file(p) && !p.ends_with("conftest.py"))
        .cloned()
        .collect();
    let example = tests
        .iter()
        .find_map(|p| read(p).map(|t| (p.clone(), t)))
        .map(|(p, t)| (p, t.lines().take(40).collect::<Vec<_>>().join("\n")));
    let request = crate::repair::prompt::reproduction_request(
        issue,
        &located.context,
        &tests,
        example.as_ref().map(|(p, t)| (p.as_str(), t.as_str())),
        deps.config.repair.max_tokens,
    );
    emit.say(
        "repair",
        "asking for a test that reproduces the issue",
        What::Progress {
            step: None,
            of: None,
        },
    );
    let asked = session.call("reproduce", &request, spent);
    emit.say("repair", "", What::ProgressDone);
    let decided = match asked {
        Err(e) => Reproduction::dropped("not written", format!("the model failed: {e}"), vec![]),
        Ok((answer, usage)) => {
            emit.run_event(
                run,
                "repair",
                format!(
                    "reproduction: {} in, {} out, ${:.5}",
                    usage.input_tokens, usage.output_tokens, usage.cost_usd
                ),
                What::Model(usage.clone()),
            )?;
            decide(
                deps,
                emit,
                run,
                repo,
                base,
                guard,
                issue,
                &answer.text(),
                &paths,
                vec![usage],
            )?
        }
    };
    run.write_json("reproduction.json", &decided)?;
    if decided.kept() {
        run.write_text("reproduction.diff", &decided.diff)?;
    }
    emit.run_event(
        run,
        "repair",
        format!("reproduction: {} ({})", decided.status, decided.why),
        What::Decision(
            json!({"status": decided.status, "tests": decided.tests, "files": decided.files}),
        ),
    )?;
    Ok(decided)
}

#[allow(clippy::too_many_arguments)]
fn decide(
    deps: &Deps<'_>,
    emit: &Emitter<'_>,
    run: &Run,
    repo: &Repository,
    base: Oid,
    guard: &PathGuard,
    issue: &Issue,
    answer: &str,
    paths: &[String],
    usage: Vec<CallUsage>,
) -> Result<Reproduction> {
    let read = |p: &str| crate::locate::files::read_at(repo, base, p);
    let applied = crate::repair::parse(answer)
        .map_err(crate::repair::ApplyError::from)
        .and_then(|e| crate::repair::apply(&e, &read, &[], guard));
    let applied = match applied {
        Ok(a) => a,
        Err(e) => {
            return Ok(Reproduction::dropped(
                "dropped",
                format!("its edits do not apply: {e}"),
                usage,
            ));
        }
    };
    let files: Vec<String> = applied.files.keys().cloned().collect();
    if let Some(f) = files.iter().find(|f| {
        paths.contains(f) || !crate::verify::detect::is_test_file(f) || f.ends_with("conftest.py")
    }) {
        return Ok(Reproduction::dropped(
            "dropped",
            format!("it writes {f}, which is not a new test file"),
            usage,
        ));
    }
    let (diff, _) = crate::repair::candidates::unified_diff(&applied.files, &read);
    if let Some(why) = crate::repair::candidates::adds_secret(deps.redactor, &diff) {
        return Ok(Reproduction::dropped("dropped", why, usage));
    }
    let tree = match crate::pr::apply_patch(repo, base, &diff, &deps.config.paths.protected) {
        Ok((tree, _, _)) => tree,
        Err(e) => {
            return Ok(Reproduction::dropped(
                "dropped",
                format!("it cannot be written: {e}"),
                usage,
            ));
        }
    };
    let (plan, runner) = super::test::test_setup(deps, emit, run, repo, base)?;
    let _polling = crate::interrupt::Polling::enter();
    let stop = || crate::interrupt::requested();
    let verifier = Verifier {
        repo,
        base,
        plan: &plan,
        runner: runner.as_ref(),
        worktrees: deps.cache_dir.join("worktrees"),
        prefix: format!("{}-reproduction", run.id()),
        cache: deps.cache_dir.join("baselines"),
        protected: deps.config.paths.protected.clone(),
        stop: &stop,
        base_again: Default::default(),
        import_prefix: Default::default(),
    };
    let baseline = verifier.baseline()?;
    let ran = verifier.run_tree("reproduction", Some(tree), &files)?;
    run.write_text("tests/reproduction.log", &ran.output)?;
    let new: Vec<(&String, &Outcome)> = ran
        .results
        .tests
        .iter()
        .filter(|(t, _)| !baseline.run.results.tests.contains_key(*t))
        .filter(|(t, _)| t.as_str() != crate::verify::results::EXIT_CODE_TEST)
        .collect();
    let failing: Vec<String> = new
        .iter()
        .filter(|(_, o)| **o == Outcome::Failed)
        .map(|(t, _)| (*t).clone())
        .collect();
    if new.is_empty() {
        return Ok(Reproduction::dropped(
            "dropped",
            format!(
                "no test of it ran on the base ({}): {}",
                ran.exit_code
                    .map_or("killed".into(), |c| format!("exit code {c}")),
                ran.tail(3).replace('\n', " | ")
            ),
            usage,
        ));
    }
    if failing.is_empty() {
        return Ok(Reproduction::dropped(
            "dropped",
            "it passes on the base, so it does not show the bug",
            usage,
        ));
    }
    let issue_named = named(issue);
    if let Some(why) = broken(&issue_named, &ran.output) {
        return Ok(Reproduction::dropped("dropped", why, usage));
    }
    let (status, why) = match confirms(&issue_named, &ran.output) {
        Some(why) => ("reproduced", why),
        None => (
            "reproduced (unconfirmed)",
            "it fails on the base, but not with an exception, message or value the issue names"
                .to_string(),
        ),
    };
    Ok(Reproduction {
        status: status.into(),
        why,
        diff,
        files,
        tests: failing,
        usage,
    })
}

/// What `test.json` says about the reproduction.
pub fn summary(r: &Reproduction) -> serde_json::Value {
    json!({"status": r.status, "why": r.why, "tests": r.tests, "files": r.files})
}

/// The reproduction's files a candidate's own change writes to.
pub fn writes_frozen<'a>(c: &Candidate, frozen: &'a [String]) -> Vec<&'a String> {
    frozen
        .iter()
        .filter(|f| c.files.iter().any(|(p, _, _)| p == *f))
        .collect()
}

/// Add the frozen test to a candidate that does not write to its files (one that does
/// is `suspect`), whether or not it brings tests of its own: a weak test of its own
/// must not spare it the reproduction, which then has to pass for `fixed`. Returns
/// true when it was added.
pub fn attach(c: &mut Candidate, r: &Reproduction) -> bool {
    if !r.kept() || c.error.is_some() || !writes_frozen(c, &r.files).is_empty() {
        return false;
    }
    if !c.diff.ends_with('\n') && !c.diff.is_empty() {
        c.diff.push('\n');
    }
    c.diff.push_str(&r.diff);
    for f in &r.files {
        let added = r
            .diff
            .lines()
            .filter(|l| l.starts_with('+') && !l.starts_with("+++"))
            .count();
        c.files.push((f.clone(), added, 0));
    }
    c.with_reproduction = true;
    true
}

/// Split the inputs of a test stage: candidates that write to the frozen test are not
/// run; each gets a `suspect` report saying so.
pub fn split_frozen(
    inputs: Vec<CandidateInput>,
    candidates: &[Candidate],
    frozen: &[String],
) -> (Vec<CandidateInput>, Vec<CandidateReport>) {
    let mut run = Vec::new();
    let mut suspect = Vec::new();
    for i in inputs {
        let c = candidates.iter().find(|c| c.id == i.id);
        let touched = c
            .filter(|c| !c.with_reproduction)
            .map(|c| writes_frozen(c, frozen))
            .unwrap_or_default();
        if touched.is_empty() {
            run.push(i);
            continue;
        }
        let names: Vec<String> = touched.iter().map(|f| (*f).clone()).collect();
        let mut report = CandidateReport::untested(&i);
        report.verdict = Verdict::Suspect;
        report.summary = format!(
            "it writes to the reproduction test ({}), which no fix may change",
            names.join(", ")
        );
        report.suspicious = names;
        suspect.push(report);
    }
    (run, suspect)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn issue(body: &str) -> Issue {
        Issue {
            repo: "acme/calc".into(),
            number: 4,
            title: "add() is wrong".into(),
            body: body.into(),
            ..Default::default()
        }
    }

    #[test]
    fn a_failure_confirms_the_issue_by_exception_message_or_named_value() {
        let n = named(&issue(
            "Calling `parse('')` raises ValueError: empty input is not allowed\n`add(2, 3)` returns -1 instead of 5",
        ));
        assert_eq!(n.exceptions, vec!["ValueError"]);
        assert_eq!(n.messages, vec!["empty input is not allowed"]);
        assert!(n.values.contains(&"-1".to_string()) && n.values.contains(&"5".to_string()));
        assert!(
            confirms(&n, "E   ValueError: something")
                .unwrap()
                .contains("ValueError")
        );
        assert!(
            confirms(&n, "E       assert -1 == 5\n")
                .unwrap()
                .contains("a value the issue names")
        );
        // A failure of another kind (an import error, a typo) does not confirm it, and
        // says the test is broken.
        assert_eq!(
            confirms(&n, "E   ModuleNotFoundError: No module named 'x'"),
            None
        );
        assert_eq!(confirms(&n, "E       assert 15 == 16\n"), None);
        let typo = "    def test_add():\n>       assert ad(2, 3) == 5\nE       NameError: name 'ad' is not defined\n";
        assert_eq!(
            confirms(&n, typo),
            None,
            "the echoed source names 5, the failure does not"
        );
        assert!(broken(&n, typo).unwrap().contains("NameError"));
        assert_eq!(broken(&n, "E       assert -1 == 5\n"), None);
        // "Steps: 1. … 2. …" numbers do not make any failing assertion a reproduction
        // unless the failure line itself shows them.
        let steps = named(&issue("Steps: 1. open 2. save"));
        assert_eq!(
            confirms(&steps, ">   assert 0 == 1\nE   AssertionError\n"),
            None
        );
    }
}
