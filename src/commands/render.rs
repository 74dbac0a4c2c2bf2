//! The terminal front-end's rendering of pipeline events: warnings and notes on
//! stderr, spinners and bars for work under way, and the questions (review, confirm)
//! put to the person at the terminal. Reports are printed by each command.

use std::collections::HashMap;
use std::sync::Mutex;

use indicatif::ProgressBar;

use super::Ctx;
use crate::pipeline::{Event, Review, ReviewAnswer, Sink, What};

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
        super::fix::review(self.ctx, question)
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
