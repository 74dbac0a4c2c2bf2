//! Rounds with feedback: when no candidate is proven, each candidate of the last round
//! goes back to the model with its diff and what the tests (or the applier) said, and
//! the answer is a new candidate, tested the same way. At most `repair.rounds` rounds,
//! at most one new candidate per candidate of the round before, within the budget.

use anyhow::Result;
use git2::{Oid, Repository};
use serde_json::json;

use super::{Deps, Emitter, What};
use crate::model::Request;
use crate::model::session::Session;
use crate::model::usage::CallUsage;
use crate::repair::PathGuard;
use crate::repair::candidates::{Candidate, RepairSettings};
use crate::runs::fs::Run;
use crate::verify::{CandidateInput, CandidateReport, TestReport, Verdict};

/// Characters of test output sent back per candidate.
const OUTPUT_CHARS: usize = 6_000;

/// What a round needs besides the run.
pub(super) struct RoundInputs<'a> {
    /// Dependencies.
    pub deps: &'a Deps<'a>,
    /// Events.
    pub emit: &'a Emitter<'a>,
    /// The model.
    pub session: &'a Session,
    /// The first request of the repair stage (issue, triage, code).
    pub first: &'a Request,
    /// A file's text at the base.
    pub read: &'a dyn Fn(&str) -> Option<String>,
    /// The context's files.
    pub context_files: &'a [String],
    /// Paths edits may not touch.
    pub guard: &'a PathGuard,
    /// The repair settings.
    pub settings: &'a RepairSettings,
    /// The checkout.
    pub repo: &'a Repository,
    /// The base commit.
    pub base: Oid,
    /// The last round to run.
    pub rounds: usize,
    /// The reproduction, when `repair.reproduce` wrote one.
    pub reproduction: Option<&'a super::reproduce::Reproduction>,
}

/// What the model is told about a candidate that did not prove the fix: the
/// applier's refusal, or the verdict, the tests by kind and the last lines of output
/// (already redacted by the test stage; the session redacts again before sending).
pub fn evidence(c: &Candidate, report: Option<&CandidateReport>) -> String {
    if let Some(e) = &c.error {
        return format!("The edits were refused, so nothing was tested: {e}");
    }
    let Some(r) = report else {
        return "It could not be tested.".into();
    };
    let mut out = format!("Verdict: {} ({}).\n", r.verdict.as_str(), r.summary);
    if r.verdict == Verdict::Unproven {
        out.push_str("No test that failed before passes now, so nothing shows the fix: add or extend a test that fails without it.\n");
    }
    for (what, list) in [
        ("Tests that passed before and fail now", &r.regressions),
        ("Tests still failing", &r.still_failing),
        ("New tests that fail", &r.new_failing),
        (
            "New tests that pass on the unfixed code too (they do not show the bug)",
            &r.not_reproduced,
        ),
        (
            "Changes to how tests run (not allowed in a fix)",
            &r.suspicious,
        ),
        ("Tests removed or skipped", &r.disappeared),
    ] {
        if !list.is_empty() {
            let shown: Vec<&str> = list.iter().take(20).map(String::as_str).collect();
            out.push_str(&format!(
                "{what}: {}{}\n",
                shown.join(", "),
                if list.len() > 20 { ", …" } else { "" }
            ));
        }
    }
    if let Some(e) = &r.error {
        out.push_str(&format!("Error: {e}\n"));
    }
    if let Some(run) = r.runs.last() {
        let tail = run.tail(80);
        let cut = tail.len().saturating_sub(OUTPUT_CHARS);
        let cut = (cut..tail.len())
            .find(|i| tail.is_char_boundary(*i))
            .unwrap_or(tail.len());
        out.push_str(&format!(
            "\nThe last lines of `{}`:\n{}{}\n",
            run.command,
            if cut > 0 { "[…]\n" } else { "" },
            &tail[cut..]
        ));
    }
    out
}

/// Run rounds until a candidate is `fixed`, the rounds are used up, the model fails
/// (a budget stop, say: said, and what there is stands) or nothing is left to answer.
/// Candidates not yet tested (a resumed run) are tested first, never asked for again.
pub(super) fn run_rounds(
    r: &RoundInputs<'_>,
    run: &mut Run,
    candidates: &mut Vec<Candidate>,
    chosen: Option<usize>,
    tests: &mut TestReport,
    calls: &mut Vec<CallUsage>,
    spent: &mut f64,
) -> Result<()> {
    loop {
        let untested: Vec<CandidateInput> = candidates
            .iter()
            .filter(|c| c.error.is_none() && c.duplicate_of.is_none())
            .filter(|c| !tests.candidates.iter().any(|t| t.id == c.id))
            .map(|c| CandidateInput {
                id: c.id,
                diff: c.diff.clone(),
                round: c.round,
            })
            .collect();
        if !untested.is_empty() {
            let frozen: Vec<String> = r
                .reproduction
                .filter(|x| x.kept())
                .map(|x| x.files.clone())
                .unwrap_or_default();
            let (untested, suspect) = super::reproduce::split_frozen(untested, candidates, &frozen);
            let mut earlier = tests.candidates.clone();
            earlier.extend(suspect);
            let kept = tests.reproduction.take();
            *tests =
                super::test::test_stage(r.deps, r.emit, run, r.repo, r.base, &untested, &earlier)?;
            if kept.is_some() {
                tests.reproduction = kept;
                run.write_json("test.json", &*tests)?;
            }
        }
        let last = candidates.iter().map(|c| c.round).max().unwrap_or(0);
        if tests.chosen.is_some() || last >= r.rounds || crate::interrupt::requested() {
            return Ok(());
        }
        let round = last + 1;
        let parents: Vec<Candidate> = candidates
            .iter()
            .filter(|c| c.round == last && c.duplicate_of.is_none())
            .cloned()
            .collect();
        if parents.is_empty() {
            return Ok(());
        }
        r.emit.run_event(
            run,
            "repair",
            format!(
                "round {round}: no candidate is proven; {} go back to the model with their evidence",
                parents.len()
            ),
            What::StageStarted,
        )?;
        let mut failure = None;
        for parent in &parents {
            let report = tests.candidates.iter().find(|t| t.id == parent.id);
            let said = evidence(parent, report);
            let request =
                crate::repair::prompt::feedback(r.first, &parent.explanation, &parent.diff, &said);
            let id = candidates.iter().map(|c| c.id).max().unwrap_or(0) + 1;
            r.emit.say(
                "repair",
                format!(
                    "round {round}: candidate {id} from candidate {}'s evidence",
                    parent.id
                ),
                What::Progress {
                    step: None,
                    of: None,
                },
            );
            let asked = crate::repair::candidates::ask(
                r.session,
                &request,
                r.read,
                r.context_files,
                r.guard,
                r.settings,
                spent,
                id,
                candidates,
                &format!("repair round {round}"),
            );
            r.emit.say("repair", "", What::ProgressDone);
            let mut c = match asked {
                Ok(c) => c,
                Err(e) => {
                    failure = Some(e);
                    break;
                }
            };
            c.round = round;
            c.parent = Some(parent.id);
            if let Some(x) = r.reproduction {
                super::reproduce::attach(&mut c, x);
            }
            for u in &c.usage {
                r.emit.run_event(
                    run,
                    "repair",
                    format!(
                        "round {round}, candidate {}: {} in, {} out, ${:.5}",
                        c.id, u.input_tokens, u.output_tokens, u.cost_usd
                    ),
                    What::Model(u.clone()),
                )?;
            }
            calls.extend(c.usage.iter().cloned());
            let what = match (&c.error, c.duplicate_of) {
                (Some(e), _) => format!("round {round}: candidate {} refused: {e}", c.id),
                (None, Some(d)) => format!(
                    "round {round}: candidate {} is the same change as candidate {d}",
                    c.id
                ),
                (None, None) => format!(
                    "round {round}: candidate {} applied (answering candidate {})",
                    c.id, parent.id
                ),
            };
            r.emit
                .run_event(run, "repair", what, What::Decision(json!({"round": round})))?;
            if c.error.is_none() {
                run.write_text(&format!("candidates/{}.diff", c.id), &c.diff)?;
            }
            candidates.push(c);
            // Written after each answer: a run killed here resumes without asking again.
            run.write_usage(calls)?;
            let review = run
                .read_json::<serde_json::Value>("candidates.json")
                .ok()
                .map(|v| v["review"].clone())
                .unwrap_or(serde_json::Value::Null);
            run.write_json(
                "candidates.json",
                &json!({"candidates": candidates, "chosen": chosen, "review": review}),
            )?;
        }
        if let Some(e) = failure {
            r.emit.run_event(
                run,
                "repair",
                format!("round {round}: the model failed ({e}); keeping what was tested"),
                What::Warning,
            )?;
            // What was written before the failure is still tested.
            let pending = candidates
                .iter()
                .any(|c| c.round == round && c.error.is_none() && c.duplicate_of.is_none());
            if !pending {
                return Ok(());
            }
            let rounds_left = round;
            let inputs = RoundInputs {
                rounds: rounds_left,
                ..*r
            };
            return run_rounds(&inputs, run, candidates, chosen, tests, calls, spent);
        }
    }
}
