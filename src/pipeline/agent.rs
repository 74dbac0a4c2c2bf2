//! Agent mode inside a fix: the repository map, the workspace on the base commit,
//! `run_tests` through the configured runner (sandboxed), the transcript in the run
//! (`agent.jsonl`), and the candidate the agent leaves.

use std::collections::BTreeMap;

use anyhow::Result;
use git2::{Oid, Repository};
use serde_json::json;

use super::{Deps, Emitter, What};
use crate::agent::tools::Workspace;
use crate::agent::{Agent, Entry, Stop};
use crate::issue::Issue;
use crate::locate::{LocateSettings, Located};

use crate::model::session::Session;
use crate::repair::PathGuard;
use crate::repair::candidates::{Candidate, RepairSettings};
use crate::runs::fs::Run;
use crate::verify::Verifier;

/// What the agent stage needs.
pub(super) struct AgentInputs<'a> {
    /// Dependencies.
    pub deps: &'a Deps<'a>,
    /// Events.
    pub emit: &'a Emitter<'a>,
    /// The model.
    pub session: &'a Session,
    /// The issue.
    pub issue: &'a Issue,
    /// What locate found.
    pub located: &'a Located,
    /// The checkout.
    pub repo: &'a Repository,
    /// The base commit.
    pub base: Oid,
    /// Paths edits may not touch.
    pub guard: &'a PathGuard,
    /// Limits and secrets rules for the candidate it leaves.
    pub settings: &'a RepairSettings,
    /// Files no edit may change (a frozen reproduction test).
    pub frozen: Vec<String>,
}

/// Run the agent (resuming its transcript when the run has one) and turn what it
/// leaves into candidate `id` of `round`.
pub(super) fn agent_candidate(
    a: &AgentInputs<'_>,
    run: &mut Run,
    id: usize,
    round: usize,
    earlier: &[Candidate],
    spent: &mut f64,
) -> Result<(Candidate, Stop)> {
    let deps = a.deps;
    let read_base = |p: &str| crate::locate::files::read_at(a.repo, a.base, p);
    let base_paths = crate::verify::tree_paths(a.repo, a.base);
    let settings = LocateSettings::from_config(&deps.config.locate)?;
    let index = crate::locate::open_index(&deps.state_dir.join("index"), a.repo, a.base, &settings)
        .ok()
        .map(|(i, _)| i);
    let (plan, runner) = super::test::test_setup(deps, a.emit, run, a.repo, a.base)?;
    let _polling = crate::interrupt::Polling::enter();
    let stop = || crate::interrupt::requested();
    let prefix = format!("{}-agent", run.id());
    let verifier = Verifier {
        repo: a.repo,
        base: a.base,
        plan: &plan,
        runner: runner.as_ref(),
        worktrees: deps.cache_dir.join("worktrees"),
        prefix,
        cache: deps.cache_dir.join("baselines"),
        protected: deps.config.paths.protected.clone(),
        stop: &stop,
        base_again: Default::default(),
        import_prefix: Default::default(),
    };
    let run_tests = |turn: usize, changed: &BTreeMap<String, Option<String>>, ids: &[String]| {
        let (diff, _) = crate::repair::candidates::unified_diff(changed, &read_base);
        let tree = if diff.is_empty() {
            None
        } else {
            match crate::pr::apply_patch(a.repo, a.base, &diff, &deps.config.paths.protected) {
                Ok((tree, _, _)) => Some(tree),
                Err(e) => return (format!("your edits could not be written: {e}"), 1),
            }
        };
        match verifier.run_tree(&format!("turn {turn}"), tree, ids) {
            Ok(r) => {
                let failed = r.results.with(crate::verify::results::Outcome::Failed);
                let passed = r.results.with(crate::verify::results::Outcome::Passed);
                let text = format!(
                    "exit code {}{}; {} passed, {} failed{}\n{}",
                    r.exit_code.map_or("none".into(), |c| c.to_string()),
                    if r.timed_out { " (timed out)" } else { "" },
                    passed.len(),
                    failed.len(),
                    if failed.is_empty() {
                        String::new()
                    } else {
                        format!(": {}", failed.join(", "))
                    },
                    r.tail(60)
                );
                let n = if r.exit_code == Some(0) {
                    failed.len()
                } else {
                    failed.len().max(1)
                };
                (text, n)
            }
            Err(e) => (format!("the tests could not run: {e}"), usize::MAX),
        }
    };
    let recorded: Vec<Entry> = run
        .read_text("agent.jsonl")
        .map(|t| {
            t.lines()
                .filter_map(|l| serde_json::from_str(l).ok())
                .collect()
        })
        .unwrap_or_default();
    if !recorded.is_empty() {
        a.emit.run_event(
            run,
            "repair",
            format!(
                "agent: resuming from its transcript ({} entries); no request is sent again",
                recorded.len()
            ),
            What::Info,
        )?;
    }
    let ranked: Vec<String> = a.located.files.iter().map(|f| f.path.clone()).collect();
    let map = crate::agent::repo_map(&ranked, &read_base);
    let record = |e: &Entry| -> Result<()> {
        run.append_line("agent.jsonl", serde_json::to_value(e)?)?;
        Ok(())
    };
    let mut ws = Workspace {
        read_base: &read_base,
        base_paths: &base_paths,
        guard: a.guard,
        index: index.as_ref(),
        changed: BTreeMap::new(),
        reports: Vec::new(),
        frozen: a.frozen.clone(),
    };
    a.emit.say(
        "repair",
        "the agent is working",
        What::Progress {
            step: None,
            of: None,
        },
    );
    let agent = Agent {
        session: a.session,
        issue: a.issue,
        repo_map: map,
        max_tokens: deps.config.repair.max_tokens,
        max_turns: deps.config.repair.max_turns,
        run_tests: &run_tests,
        recorded,
        record: &record,
        stop: &stop,
    };
    let result = agent.run(&mut ws, spent);
    a.emit.say("repair", "", What::ProgressDone);
    let result = result?;
    for u in &result.usage {
        a.emit.run_event(
            run,
            "repair",
            format!(
                "agent: {} in ({} cached, {} to cache), {} out, ${:.5}",
                u.input_tokens,
                u.cache_read_tokens,
                u.cache_write_tokens,
                u.output_tokens,
                u.cost_usd
            ),
            What::Model(u.clone()),
        )?;
    }
    a.emit.run_event(
        run,
        "repair",
        format!(
            "agent: {} turn(s), stopped: {:?}; {}",
            result.turns,
            result.stop,
            result.trace.join("; ")
        ),
        What::Decision(json!({"turns": result.turns, "stop": result.stop, "trace": result.trace})),
    )?;
    let mut candidate = Candidate {
        id,
        diff: String::new(),
        explanation: result.explanation.chars().take(1500).collect(),
        edits: Vec::new(),
        files: Vec::new(),
        usage: result.usage.clone(),
        attempts: result.turns,
        error: None,
        duplicate_of: None,
        round,
        parent: None,
        by: Some("agent".into()),
        trace: result.trace.clone(),
        with_reproduction: false,
    };
    let (diff, changed) = crate::repair::candidates::unified_diff(&result.changed, &read_base);
    if diff.is_empty() {
        candidate.error = Some(format!(
            "the agent changed nothing ({:?} after {} turn(s))",
            result.stop, result.turns
        ));
    } else {
        crate::repair::candidates::settle(
            &mut candidate,
            diff,
            changed,
            result.reports,
            false,
            &a.session.redactor,
            a.settings,
            earlier,
        );
    }
    Ok((candidate, result.stop))
}
