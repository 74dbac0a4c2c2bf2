//! Event-path benchmark: what reporting through the pipeline's events costs per fix.
//! Emits the events a published fix emits (26 kept in the run's `events.jsonl`, each
//! redacted and appended; 12 progress events to the sink only) into a real run folder,
//! 200 times, and prints the time per fix. `cargo bench --bench pipeline_events`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Instant;

use autotriage::pipeline::{Emitter, RecordingSink, What};
use autotriage::redact::Redactor;
use autotriage::runs::fs::FsRunStore;
use serde_json::json;

fn main() {
    let dir = tempfile::tempdir().unwrap();
    let store = FsRunStore::new(dir.path().join("runs"), Redactor::default());
    let fixes = 200;
    let mut per_fix = Vec::new();
    for _ in 0..fixes {
        let run = store.begin("acme/calc", 4, "fix").unwrap();
        let sink = RecordingSink::default();
        let emit = Emitter::new(&sink, "acme/calc#4");
        let started = Instant::now();
        for stage in ["triage", "locate", "repair", "test", "pr"] {
            emit.run_event(&run, stage, format!("{stage} started"), What::StageStarted)
                .unwrap();
            for i in 0..3 {
                emit.run_event(
                    &run,
                    stage,
                    format!("{stage} decision {i}: ranked 40 files; context 6000 of 8000 tokens"),
                    What::Decision(
                        json!({"top": ["calc/ops.py", "calc/util.py", "tests/test_ops.py"]}),
                    ),
                )
                .unwrap();
            }
            emit.say(
                stage,
                "working",
                What::Progress {
                    step: Some(1),
                    of: Some(2),
                },
            );
            emit.say(stage, "", What::ProgressDone);
            emit.run_event(
                &run,
                stage,
                format!("{stage} finished"),
                What::StageFinished { error: None },
            )
            .unwrap();
        }
        emit.run_event(&run, "job", "spent $0.0045", What::Spent { usd: 0.0045 })
            .unwrap();
        per_fix.push(started.elapsed().as_secs_f64());
    }
    per_fix.sort_by(f64::total_cmp);
    let median = per_fix[per_fix.len() / 2];
    println!(
        "event path per fix: median {:.3} ms, max {:.3} ms over {fixes} fixes (26 events written, 10 progress); a fix's stages take seconds (eval fix median ~10 s), so the share is {:.4} %",
        median * 1e3,
        per_fix[per_fix.len() - 1] * 1e3,
        median / 10.0 * 100.0
    );
}
