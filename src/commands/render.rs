//! The terminal front-end's rendering of pipeline events: warnings and notes on
//! stderr, spinners and bars for work under way, and the questions (review, confirm)
//! put to the person at the terminal. Reports are printed by each command.

use std::collections::HashMap;
use std::sync::Mutex;

use indicatif::ProgressBar;

use anyhow::Result;

use super::Ctx;
use crate::error::CommandError;
use crate::pipeline::events::Edited;
use crate::pipeline::{Event, Review, ReviewAnswer, Sink, What};
use crate::verify::{self, TestReport};

/// The terminal as a sink: one spinner or bar per issue at a time.
pub(crate) struct Terminal<'a> {
    ctx: &'a Ctx,
    bars: Mutex<HashMap<String, ProgressBar>>,
}

impl<'a> Terminal<'a> {
    /// A sink rendering to `ctx`'s output.
    pub(crate) fn new(ctx: &'a Ctx) -> Self {
        Self {
            ctx,
            bars: Mutex::new(HashMap::new()),
        }
    }

    /// Run `f` with the bars out of the way (a line printed under a bar).
    pub(crate) fn suspend<R>(&self, f: impl FnOnce() -> R) -> R {
        let bars = self.bars.lock().unwrap_or_else(|p| p.into_inner());
        match bars.values().next() {
            Some(b) => b.suspend(f),
            None => f(),
        }
    }

    fn progress(&self, event: &Event, step: Option<u64>, of: Option<u64>) {
        let mut bars = self.bars.lock().unwrap_or_else(|p| p.into_inner());
        let bar = bars.entry(event.issue.clone()).or_insert_with(|| match of {
            Some(n) => self.ctx.out.progress(n, &event.message),
            None => self.ctx.out.spinner(&event.message),
        });
        if let Some(s) = step {
            bar.set_position(s);
        }
        bar.set_message(event.message.clone());
    }
}

impl Sink for Terminal<'_> {
    fn emit(&self, event: &Event) {
        let out = &self.ctx.out;
        match &event.what {
            What::Warning => self.suspend(|| out.warn(&event.message)),
            What::Info | What::Resumed { .. } => self.suspend(|| out.info(&event.message)),
            What::Progress { step, of } => self.progress(event, *step, *of),
            What::ProgressDone => {
                let mut bars = self.bars.lock().unwrap_or_else(|p| p.into_inner());
                if let Some(b) = bars.remove(&event.issue) {
                    b.finish_and_clear();
                }
            }
            _ => {}
        }
    }

    fn review(&self, question: &Review<'_>) -> ReviewAnswer {
        review(self.ctx, question)
    }

    fn asks(&self) -> bool {
        self.ctx.out.interactive && !self.ctx.global.yes && !self.ctx.out.json
    }

    fn confirm(&self, preview: &str, question: &str) -> bool {
        if !self.asks() || self.ctx.global.dry_run {
            return true;
        }
        self.ctx.out.info(preview);
        dialoguer::Confirm::new()
            .with_prompt(question)
            .default(false)
            .interact()
            .unwrap_or(false)
    }
}

/// A diff with added lines green, removed red, hunk headers cyan (when colour is on).
pub(crate) fn colour_diff(ctx: &Ctx, diff: &str) -> String {
    if !ctx.out.color {
        return diff.trim_end().to_string();
    }
    diff.lines()
        .map(|l| {
            if l.starts_with("+++") || l.starts_with("---") || l.starts_with("diff --git") {
                format!("\x1b[1m{l}\x1b[0m")
            } else if l.starts_with('+') {
                format!("\x1b[32m{l}\x1b[0m")
            } else if l.starts_with('-') {
                format!("\x1b[31m{l}\x1b[0m")
            } else if l.starts_with("@@") {
                format!("\x1b[36m{l}\x1b[0m")
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The report's lines, shared with `fix`.
pub(crate) fn print_lines(ctx: &Ctx, report: &TestReport) {
    let b = &report.baseline.run;
    ctx.out.line(&format!(
        "  tests: `{}` ({}), {}",
        report.plan.command,
        if report.plan.detected {
            "detected"
        } else {
            "configured"
        },
        report.runner
    ));
    ctx.out.line(&format!(
        "  base {}: {} passing, {} failing{}",
        report.base_commit.get(..12).unwrap_or(&report.base_commit),
        b.results.with(verify::results::Outcome::Passed).len(),
        b.results.with(verify::results::Outcome::Failed).len(),
        if report.baseline.cached {
            " (cached)"
        } else {
            ""
        }
    ));
    for c in &report.candidates {
        let mark = if Some(c.id) == report.chosen {
            "*"
        } else {
            " "
        };
        ctx.out.line(&format!(
            "  {mark} candidate {}{}: {} — {}",
            c.id,
            if c.round > 0 {
                format!(" (round {})", c.round)
            } else {
                String::new()
            },
            c.verdict.as_str(),
            c.summary
        ));
    }
}

/// The dry-run review on a terminal. Without a person to ask (not a terminal, `--yes`),
/// the candidates are shown and the first that applied goes on; with `--json`, nothing
/// is shown. Else each candidate is shown with the question: accept, reject, or edit
/// in $EDITOR.
pub(crate) fn review(ctx: &Ctx, q: &Review<'_>) -> ReviewAnswer {
    if ctx.out.json {
        return ReviewAnswer::NotAsked;
    }
    if !ctx.out.interactive || ctx.global.yes {
        for c in q
            .candidates
            .iter()
            .filter(|c| c.error.is_none() && c.duplicate_of.is_none())
        {
            ctx.out
                .line(&format!("candidate {}: {}", c.id, c.explanation));
            ctx.out.line(&colour_diff(ctx, &c.diff));
        }
        return ReviewAnswer::NotAsked;
    }
    match review_candidates(ctx, q) {
        Ok((id, edited)) => ReviewAnswer::Chosen { id, edited },
        Err(e) => ReviewAnswer::Failed(format!("{e:#}")),
    }
}

fn review_candidates(ctx: &Ctx, q: &Review<'_>) -> Result<(Option<usize>, Option<Edited>)> {
    let located = q.located;
    ctx.out.line("ranked files:");
    for (i, f) in located.files.iter().take(5).enumerate() {
        let why = f.evidence.first().map(|e| e.detail.as_str()).unwrap_or("");
        ctx.out
            .line(&format!("  {}. {}  {}", i + 1, f.path, ctx.out.dim(why)));
    }
    for c in q.candidates {
        if c.error.is_some() || c.duplicate_of.is_some() {
            continue;
        }
        let origin = match (&c.by, c.parent) {
            (Some(by), _) => format!(" ({by}, round {})", c.round),
            (None, Some(p)) => format!(" (round {}, answering candidate {p})", c.round),
            (None, None) => String::new(),
        };
        ctx.out.line(&format!(
            "\n{} {}",
            ctx.out.bold(&format!("candidate {}{origin}:", c.id)),
            c.explanation
        ));
        if !c.trace.is_empty() {
            ctx.out.line(&ctx.out.dim("  trace:"));
            for t in c.trace.iter().take(40) {
                ctx.out.line(&ctx.out.dim(&format!("    {t}")));
            }
        }
        ctx.out.line(&colour_diff(ctx, &c.diff));
        let pick = dialoguer::Select::new()
            .with_prompt(format!("candidate {}", c.id))
            .items(["accept", "reject", "edit in $EDITOR"])
            .default(0)
            .interact_opt()
            .map_err(|e| CommandError::failure(format!("the prompt failed: {e}")))?;
        match pick {
            Some(0) => return Ok((Some(c.id), None)),
            Some(2) => {
                let edited = dialoguer::Editor::new()
                    .extension(".diff")
                    .edit(&c.diff)
                    .map_err(|e| CommandError::failure(format!("the editor failed: {e}")))?;
                let Some(text) = edited else { continue };
                match (q.check_edit)(&text) {
                    Ok(edited) => return Ok((Some(c.id), Some(edited))),
                    Err(e) => ctx.out.warn(&format!(
                        "the edited patch does not apply, so it was not kept: {e}"
                    )),
                }
            }
            _ => {}
        }
    }
    Ok((None, None))
}
