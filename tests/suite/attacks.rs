//! Attacks on a run, each written from the attacker's side against the stateful fake
//! GitHub: a stranger's comment carrying our marker, a contributor's commit on our
//! branch name, someone else's PR from our branch, a trigger label added by a reader,
//! hostile issue text, odd and missing labels, and the exit code of every failure.
//!
//! Each test asserts the state on the fake (its write log, comments, refs, labels,
//! pulls) and greps every file under `.autotriage/` (and the output) for what must not
//! be there.

use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};

use serde_json::{Value, json};
use wiremock::matchers::{method, path};
use wiremock::{Mock, ResponseTemplate};

use crate::suite::common::{HttpMock, TestContext, code, json, stderr, stdout};
use crate::suite::fake_github::{FakeGithub, Write};

// ---------------------------------------------------------------------------------
// The world: a maintainer, a stranger, a contributor and the bot
// ---------------------------------------------------------------------------------

/// A maintainer's token (`maint`, write permission).
const MAINT: &str = "ghp_attackmaintainer00000000000000000001";
/// The bot's token (`autotriage-bot`, a user token with write permission).
const BOT: &str = "ghp_attackautotriagebot0000000000000002";
/// A stranger's token (`stranger`, read only: anyone on the internet).
const STRANGER: &str = "ghp_attackstranger000000000000000000003";
/// The model's key (never to be written anywhere).
const MODEL_KEY: &str = "sk-ant-attack-test-key-0000000000000000";
/// Every secret a run is handed.
const SECRETS: &[&str] = &[MAINT, BOT, STRANGER, MODEL_KEY];

const BOT_LOGIN: &str = "autotriage-bot";

const LIB: &str = "pub fn add(a: i32, b: i32) -> i32 {\n    a - b\n}\n";
const FIX: &str = "diff --git a/src/lib.rs b/src/lib.rs\n--- a/src/lib.rs\n+++ b/src/lib.rs\n@@ -1,3 +1,3 @@\n pub fn add(a: i32, b: i32) -> i32 {\n-    a - b\n+    a + b\n }\n";
/// Another fix of the same line (a second run that must update our branch).
const FIX2: &str = "diff --git a/src/lib.rs b/src/lib.rs\n--- a/src/lib.rs\n+++ b/src/lib.rs\n@@ -1,3 +1,3 @@\n pub fn add(a: i32, b: i32) -> i32 {\n-    a - b\n+    b + a\n }\n";

/// `o/r` with `src/lib.rs` on `main`; `maint` and the bot may write, `stranger` (and
/// everyone else) may only read.
fn world() -> FakeGithub {
    let gh = FakeGithub::start();
    let mut w = gh.world();
    w.add_user_token(MAINT, "maint");
    w.add_user_token(BOT, BOT_LOGIN);
    w.add_user_token(STRANGER, "stranger");
    w.add_repo(
        "o/r",
        "main",
        &[("src/lib.rs", LIB), ("README.md", "# r\n")],
    );
    w.set_permission("o/r", "maint", "write");
    w.set_permission("o/r", BOT_LOGIN, "write");
    w.set_permission("o/r", "stranger", "read");
    drop(w);
    gh
}

/// `world()` with issue `number` ("add() subtracts") opened by a reporter nobody knows.
fn world_with_issue(number: u64) -> FakeGithub {
    let gh = world();
    gh.world().add_issue(
        "o/r",
        number,
        "add() subtracts",
        "`add(2, 2)` returns 0.",
        "reporter",
        "NONE",
        &[],
    );
    gh
}

/// A sandbox holding `fix.diff` (and `fix2.diff`).
fn sandbox() -> TestContext {
    let t = TestContext::new();
    t.write("fix.diff", FIX);
    t.write("fix2.diff", FIX2);
    t
}

/// `pr o/r#N --patch FILE --forge github --json`.
fn pr_github(gh: &FakeGithub, t: &TestContext, number: u64, patch: &str) -> Output {
    let reference = format!("o/r#{number}");
    gh.run(
        t,
        BOT,
        &[
            "pr", &reference, "--patch", patch, "--forge", "github", "--json",
        ],
    )
}

/// The binary against the fake with `token` and a model key, in `t`.
fn run_with_key(gh: &FakeGithub, t: &TestContext, token: &str, args: &[&str]) -> Output {
    gh.cmd(t, token)
        .env("ANTHROPIC_API_KEY", MODEL_KEY)
        .args(args)
        .output()
        .unwrap()
}

/// Import the example history (renamed to `o/r`), so triage knows the kinds and labels.
fn import_history(t: &TestContext) {
    let ex = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/issues");
    for e in std::fs::read_dir(&ex).unwrap() {
        let p = e.unwrap().path();
        let name = p.file_name().unwrap().to_str().unwrap().to_string();
        if !name.starts_with("02") || name.as_str() < "023" {
            let text = std::fs::read_to_string(&p)
                .unwrap()
                .replace("repo: acme/widgets", "repo: o/r");
            t.write(&format!("hist/{name}"), &text);
        }
    }
    assert_eq!(code(&t.run(&["memory", "import", "hist"])), 0);
}

// ---------------------------------------------------------------------------------
// Looking for what must not be there
// ---------------------------------------------------------------------------------

/// Every file under `dir` (recursively) whose bytes contain `needle`.
fn grep_tree(dir: &Path, needle: &str) -> Vec<PathBuf> {
    let needle = needle.as_bytes();
    let mut hits = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            let Ok(kind) = e.file_type() else { continue };
            if kind.is_dir() {
                stack.push(p);
            } else if let Ok(bytes) = std::fs::read(&p)
                && !needle.is_empty()
                && bytes.windows(needle.len()).any(|w| w == needle)
            {
                hits.push(p);
            }
        }
    }
    hits.sort();
    hits
}

/// The run state of a sandbox.
fn state_dir(t: &TestContext) -> PathBuf {
    t.path().join(".autotriage")
}

/// `needle` is in no file under `.autotriage/` other than those named in `allowed`
/// (e.g. `issue.json`, the record of the input), and in no output.
fn assert_absent(t: &TestContext, outputs: &[&Output], needle: &str, allowed: &[&str]) {
    let hits: Vec<PathBuf> = grep_tree(&state_dir(t), needle)
        .into_iter()
        .filter(|p| {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            !allowed.contains(&name)
        })
        .collect();
    assert!(hits.is_empty(), "{needle:?} was written to {hits:#?}");
    for o in outputs {
        assert!(
            !stdout(o).contains(needle),
            "{needle:?} is on stdout: {}",
            stdout(o)
        );
        assert!(
            !stderr(o).contains(needle),
            "{needle:?} is on stderr: {}",
            stderr(o)
        );
    }
}

/// No token or key in any file under `.autotriage/` or in any output.
fn assert_no_secrets(t: &TestContext, outputs: &[&Output]) {
    for s in SECRETS {
        assert_absent(t, outputs, s, &[]);
    }
}

/// The writes to `o/r` after the first `from`.
fn writes_since(gh: &FakeGithub, from: usize) -> Vec<Write> {
    let w = gh.world();
    w.log[from.min(w.log.len())..]
        .iter()
        .filter(|x| x.path.starts_with("/repos/o/r"))
        .cloned()
        .collect()
}

/// A branch's head on the fake.
fn head(gh: &FakeGithub, branch: &str) -> Option<String> {
    gh.world().branch_head("o/r", branch)
}

/// The branches of `o/r` whose name starts with `prefix`.
fn branches(gh: &FakeGithub, prefix: &str) -> Vec<String> {
    let git = gh.world().repo("o/r").repo();
    let mut out: Vec<String> = git
        .references()
        .unwrap()
        .flatten()
        .filter_map(|r| r.name().ok().map(String::from))
        .filter_map(|n| n.strip_prefix("refs/heads/").map(String::from))
        .filter(|n| n.starts_with(prefix))
        .collect();
    out.sort();
    out
}

/// The fix records in memory.
fn fix_records(t: &TestContext) -> Vec<Value> {
    let o = t.run(&["memory", "export", "--jsonl"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    stdout(&o)
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|r| r["type"] == "fix")
        .collect()
}

// ---------------------------------------------------------------------------------
// 1. A stranger's comment with our PR marker
// ---------------------------------------------------------------------------------

#[test]
fn attack_a_strangers_pr_marker_comment_is_never_edited() {
    let gh = world_with_issue(3);
    let planted_body = "<!-- autotriage:pr -->\nA draft pull request proposes a fix: https://evil.example/pull/1\n";
    let planted = gh.world().add_comment("o/r", 3, "stranger", planted_body);
    let t = sandbox();

    let first = pr_github(&gh, &t, 3, "fix.diff");
    assert_eq!(code(&first), 0, "{}", stderr(&first));
    let v = json(&first);
    assert_eq!(v["github"]["comment"], "created", "{v:#}");
    let ours = {
        let w = gh.world();
        let c = w.comment("o/r", planted);
        assert_eq!(c.body, planted_body, "the stranger's comment changed");
        assert!(c.edited_by.is_empty(), "edited by {:?}", c.edited_by);
        let mine: Vec<_> = w
            .issue("o/r", 3)
            .comments
            .iter()
            .filter(|c| c.author == BOT_LOGIN)
            .collect();
        assert_eq!(mine.len(), 1, "our own link comment is posted");
        assert!(mine[0].body.starts_with("<!-- autotriage:pr -->"));
        assert!(
            mine[0].body.contains("https://github.com/o/r/pull/4"),
            "{}",
            mine[0].body
        );
        mine[0].id
    };

    // Our comment went stale; a re-run must update it, and only it.
    {
        let mut w = gh.world();
        let issue = w.issue_mut("o/r", 3);
        let c = issue.comments.iter_mut().find(|c| c.id == ours).unwrap();
        c.body = "<!-- autotriage:pr -->\nstale\n".into();
    }
    let before = gh.world().log.len();
    let second = pr_github(&gh, &t, 3, "fix.diff");
    assert_eq!(code(&second), 0, "{}", stderr(&second));
    assert_eq!(json(&second)["github"]["comment"], "updated");
    let w = gh.world();
    let edits: Vec<String> = w
        .writes("o/r")
        .iter()
        .filter(|x| {
            (x.method == "PATCH" || x.method == "DELETE") && x.path.contains("/issues/comments/")
        })
        .map(|x| format!("{} {} {}", x.method, x.path, x.detail))
        .collect();
    assert_eq!(
        edits,
        vec![format!(
            "PATCH /repos/o/r/issues/comments/{ours} comment {ours} on #3 edited by its author"
        )],
        "{:#?}",
        writes_since(&gh, before)
    );
    let c = w.comment("o/r", planted);
    assert_eq!(c.body, planted_body);
    assert!(c.edited_by.is_empty());
    let mine: Vec<_> = w
        .issue("o/r", 3)
        .comments
        .iter()
        .filter(|c| c.author == BOT_LOGIN)
        .collect();
    assert_eq!(mine.len(), 1, "one comment of ours in total");
    assert!(mine[0].body.contains("https://github.com/o/r/pull/4"));
    assert_eq!(w.issue("o/r", 3).comments.len(), 2);
    drop(w);
    // The stranger's text is only in the record of the issue as read.
    assert_absent(&t, &[&first, &second], "evil.example", &["issue.json"]);
    assert_no_secrets(&t, &[&first, &second]);
}

// ---------------------------------------------------------------------------------
// 2. A contributor's commit on our branch name (GitHub)
// ---------------------------------------------------------------------------------

#[test]
fn attack_a_contributors_branch_on_github_is_left_alone() {
    let gh = world_with_issue(3);
    let theirs = gh.world().push_commit(
        "o/r",
        "autotriage/issue-3",
        None,
        &[(
            "src/lib.rs",
            "pub fn add(a: i32, b: i32) -> i32 {\n    a.wrapping_add(b)\n}\n",
        )],
        "contrib",
        "My own fix for add()",
    );
    let t = sandbox();
    let first = pr_github(&gh, &t, 3, "fix.diff");
    assert_eq!(code(&first), 0, "{}", stderr(&first));
    let v = json(&first);
    let published = &v["github"]["published"];
    assert_eq!(
        head(&gh, "autotriage/issue-3").as_deref(),
        Some(theirs.as_str())
    );
    assert_eq!(published["branch"], "autotriage/issue-3-2", "{v:#}");
    let note = published["note"].as_str().unwrap_or("");
    assert!(
        note.contains("autotriage/issue-3") && note.contains("not ours"),
        "the output says why: {v:#}"
    );
    let ours1 = head(&gh, "autotriage/issue-3-2").expect("our branch");
    assert_eq!(published["commit"], ours1.as_str());
    {
        let w = gh.world();
        let r = w.repo("o/r");
        assert_eq!(r.pulls.len(), 1);
        assert_eq!(r.pulls[0].head, "autotriage/issue-3-2");
        assert!(r.pulls[0].body.contains("not ours"), "{}", r.pulls[0].body);
        // Nothing was sent to the contributor's branch.
        assert!(
            !w.writes("o/r")
                .iter()
                .any(|x| x.path.ends_with("/git/refs/heads/autotriage/issue-3")
                    || x.detail.contains("refs/heads/autotriage/issue-3 ")),
            "{:#?}",
            w.writes("o/r")
        );
    }
    // Recorded: the run's pr.json and memory name -2 and our commit.
    let fixes = fix_records(&t);
    assert!(
        fixes.iter().any(|f| f["branch"] == "autotriage/issue-3-2"
            && f["commits"]
                .as_array()
                .is_some_and(|c| c.iter().any(|c| c == ours1.as_str()))),
        "{fixes:#?}"
    );
    assert!(!grep_tree(&state_dir(&t), &ours1).is_empty());

    // A second run with another patch updates -2: no -3, the contributor untouched.
    let before = gh.world().log.len();
    let second = pr_github(&gh, &t, 3, "fix2.diff");
    assert_eq!(code(&second), 0, "{}", stderr(&second));
    let v = json(&second);
    assert_eq!(v["github"]["published"]["branch"], "autotriage/issue-3-2");
    assert_eq!(v["github"]["published"]["status"], "updated");
    assert_eq!(
        branches(&gh, "autotriage/"),
        vec!["autotriage/issue-3", "autotriage/issue-3-2"]
    );
    assert_eq!(
        head(&gh, "autotriage/issue-3").as_deref(),
        Some(theirs.as_str())
    );
    let ours2 = head(&gh, "autotriage/issue-3-2").unwrap();
    assert_ne!(ours2, ours1);
    let forced: Vec<Write> = writes_since(&gh, before)
        .into_iter()
        .filter(|x| x.detail.contains("force=true"))
        .collect();
    assert!(
        forced
            .iter()
            .all(|x| x.path.ends_with("/git/refs/heads/autotriage/issue-3-2")
                && x.detail.contains(&format!("old={ours1}"))),
        "a force only ever replaces our own commit: {forced:#?}"
    );
    assert_eq!(gh.world().repo("o/r").pulls.len(), 1);
    // The contributor's commit is never recorded as ours.
    assert_absent(&t, &[&first, &second], &theirs, &[]);
    assert_no_secrets(&t, &[&first, &second]);
}

#[test]
fn attack_a_commit_pushed_on_top_of_our_branch_is_never_forced_over() {
    let gh = world_with_issue(3);
    let t = sandbox();
    let o = pr_github(&gh, &t, 3, "fix.diff");
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let ours = head(&gh, "autotriage/issue-3").unwrap();
    // A contributor adds their commit on top of ours.
    let theirs = gh.world().push_commit(
        "o/r",
        "autotriage/issue-3",
        None,
        &[(
            "tests/add.rs",
            "#[test]\nfn two() { assert_eq!(r::add(2, 2), 4); }\n",
        )],
        "contrib",
        "Add a test",
    );
    let before = gh.world().log.len();
    let again = pr_github(&gh, &t, 3, "fix2.diff");
    assert_eq!(code(&again), 0, "{}", stderr(&again));
    let v = json(&again);
    let now = head(&gh, "autotriage/issue-3").unwrap();
    {
        let w = gh.world();
        let git = w.repo("o/r").repo();
        let (h, c) = (
            git2::Oid::from_str(&now).unwrap(),
            git2::Oid::from_str(&theirs).unwrap(),
        );
        assert!(
            h == c || git.graph_descendant_of(h, c).unwrap(),
            "the contributor's commit is gone from the branch: {:#?}",
            writes_since(&gh, before)
        );
    }
    let forced: Vec<Write> = writes_since(&gh, before)
        .into_iter()
        .filter(|x| x.detail.contains(&format!("old={theirs}")))
        .collect();
    assert!(forced.is_empty(), "{forced:#?}");
    assert_ne!(
        v["github"]["published"]["branch"], "autotriage/issue-3",
        "{v:#}"
    );
    assert_absent(&t, &[&o, &again], &theirs, &[]);
    assert!(!grep_tree(&state_dir(&t), &ours).is_empty());
}

#[test]
fn attack_an_unrecorded_branch_that_looks_like_ours_is_not_ours() {
    // Made before records existed (or by someone imitating the bot): the author, the
    // message and the trailer all look like ours, and nothing of ours recorded it.
    let gh = world_with_issue(3);
    let lookalike = gh.world().push_commit(
        "o/r",
        "autotriage/issue-3",
        None,
        &[("src/lib.rs", "pub fn add(a: i32, b: i32) -> i32 {\n    a + b\n}\n")],
        "autotriage",
        "Fix #3: add() subtracts\n\nWritten by autotriage; see the PR description.\n\nAutotriage-Run: 20240101T000000Z-0000\n",
    );
    let t = sandbox();
    let o = pr_github(&gh, &t, 3, "fix.diff");
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let v = json(&o);
    assert_eq!(
        head(&gh, "autotriage/issue-3").as_deref(),
        Some(lookalike.as_str())
    );
    assert_eq!(v["github"]["published"]["branch"], "autotriage/issue-3-2");
    assert!(
        v["github"]["published"]["note"]
            .as_str()
            .is_some_and(|n| n.contains("autotriage/issue-3")),
        "{v:#}"
    );
    assert!(
        !gh.world()
            .writes("o/r")
            .iter()
            .any(|x| x.detail.contains("refs/heads/autotriage/issue-3 ")),
        "{:#?}",
        gh.world().writes("o/r")
    );
    assert_absent(&t, &[&o], &lookalike, &[]);
    assert_no_secrets(&t, &[&o]);
}

// ---------------------------------------------------------------------------------
// 3. A contributor's commit on our branch name (local forge)
// ---------------------------------------------------------------------------------

#[test]
fn attack_a_contributors_local_branch_is_left_alone() {
    let t = sandbox();
    let repo = git2::Repository::init(t.path()).unwrap();
    t.write("src/lib.rs", LIB);
    t.write(".gitignore", ".autotriage/\n*.diff\n/issues\n");
    let mut index = repo.index().unwrap();
    index.add_path(Path::new("src/lib.rs")).unwrap();
    index.add_path(Path::new(".gitignore")).unwrap();
    index.write().unwrap();
    let tree = repo.find_tree(index.write_tree().unwrap()).unwrap();
    let sig = git2::Signature::now("t", "t@example.com").unwrap();
    let base = repo
        .commit(Some("HEAD"), &sig, &sig, "init", &tree, &[])
        .unwrap();
    // The contributor's work on `autotriage/issue-3`.
    let theirs = {
        let base_commit = repo.find_commit(base).unwrap();
        let blob = repo
            .blob(b"pub fn add(a: i32, b: i32) -> i32 {\n    a.wrapping_add(b)\n}\n")
            .unwrap();
        let mut b = git2::build::TreeUpdateBuilder::new();
        b.upsert("src/lib.rs", blob, git2::FileMode::Blob);
        let tree = repo
            .find_tree(
                b.create_updated(&repo, &base_commit.tree().unwrap())
                    .unwrap(),
            )
            .unwrap();
        let them = git2::Signature::now("contrib", "contrib@example.com").unwrap();
        let oid = repo
            .commit(None, &them, &them, "My own fix", &tree, &[&base_commit])
            .unwrap();
        repo.branch("autotriage/issue-3", &repo.find_commit(oid).unwrap(), false)
            .unwrap();
        oid
    };
    t.write(
        "issues/3.md",
        "---\nrepo: acme/calc\nnumber: 3\ntitle: add() subtracts\n---\n`add(2, 2)` returns 0 instead of 4.\n",
    );
    let branch = |name: &str| {
        repo.find_reference(&format!("refs/heads/{name}"))
            .ok()
            .and_then(|r| r.target())
    };

    let first = t.run(&["pr", "issues/3.md", "--patch", "fix.diff"]);
    assert_eq!(code(&first), 0, "{}", stderr(&first));
    assert_eq!(branch("autotriage/issue-3"), Some(theirs), "untouched");
    let ours = branch("autotriage/issue-3-2").expect("ours went to -2");
    let c = repo.find_commit(ours).unwrap();
    assert_eq!(c.parent_id(0).unwrap(), base);
    assert_eq!(repo.head().unwrap().target(), Some(base));
    // Again, as JSON: still -2, no -3.
    let second = t.run(&["pr", "issues/3.md", "--patch", "fix2.diff", "--json"]);
    assert_eq!(code(&second), 0, "{}", stderr(&second));
    let v = json(&second);
    assert_eq!(v["branch"], "autotriage/issue-3-2", "{v:#}");
    assert_eq!(v["status"], "updated");
    assert_eq!(branch("autotriage/issue-3"), Some(theirs));
    assert!(branch("autotriage/issue-3-3").is_none());
    assert_absent(&t, &[&first, &second], &theirs.to_string(), &[]);
    // Said so: the user learns why the branch is not the usual one.
    let said = format!("{}{}", stdout(&first), stderr(&first));
    assert!(
        said.contains("autotriage/issue-3-2") && said.contains("not ours"),
        "`pr` does not say why it published on -2: {said}"
    );
}

// ---------------------------------------------------------------------------------
// 4. Someone else's open PR from our branch
// ---------------------------------------------------------------------------------

#[test]
fn attack_someone_elses_pr_from_our_branch_is_left_alone() {
    let gh = world_with_issue(3);
    let t = sandbox();
    let o = pr_github(&gh, &t, 3, "fix.diff");
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    // Our PR gets closed; a maintainer opens their own from our branch.
    let theirs = {
        let mut w = gh.world();
        let r = w.repo_mut("o/r");
        r.pulls.iter_mut().for_each(|p| p.state = "closed".into());
        let n = w.add_pull(
            "o/r",
            "maint: a better take on #3",
            "autotriage/issue-3",
            "main",
            "maint",
            false,
        );
        let p = w.repo_mut("o/r").pulls.iter_mut().find(|p| p.number == n);
        p.unwrap().body = "maint's own notes".into();
        n
    };
    let before = gh.world().log.len();
    let again = pr_github(&gh, &t, 3, "fix.diff");
    assert_eq!(code(&again), 1, "a partial publish: {}", stderr(&again));
    let err = stderr(&again);
    assert!(err.contains("maint"), "the message names the author: {err}");
    let w = gh.world();
    let p = w.repo("o/r").pull(theirs).unwrap();
    assert_eq!(p.title, "maint: a better take on #3");
    assert_eq!(p.body, "maint's own notes");
    assert_eq!(p.state, "open");
    assert_eq!(w.repo("o/r").pulls.len(), 2, "no PR opened beside it");
    let since: Vec<Write> = w.log[before..].to_vec();
    assert!(
        !since.iter().any(|x| x.path.contains("/pulls")),
        "{since:#?}"
    );
    drop(w);
    assert_no_secrets(&t, &[&o, &again]);
}

// ---------------------------------------------------------------------------------
// 5. A stranger's trigger label after a stored triage
// ---------------------------------------------------------------------------------

const MODEL_SENTINEL: &str = "SENTINEL-OF-THE-MODEL-ANSWER";

/// A model that always answers with a fix of `add()`.
fn model() -> HttpMock {
    let s = HttpMock::start();
    let text = format!(
        "{MODEL_SENTINEL}: the `-` should be `+`.\n\nsrc/lib.rs\n```rust\n<<<<<<< SEARCH\n    a - b\n=======\n    a + b\n>>>>>>> REPLACE\n```\n"
    );
    s.mount(
        Mock::given(method("POST"))
            .and(path("/v1/messages"))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({
                "id": "msg_1", "type": "message", "role": "assistant", "model": "claude-x",
                "content": [{"type": "text", "text": text}],
                "stop_reason": "end_turn", "usage": {"input_tokens": 1000, "output_tokens": 100}
            }))),
    );
    s
}

/// Config: the fake's clone URL, and (when given) a model, one candidate, no sandbox.
fn fix_config(gh: &FakeGithub, model: Option<&HttpMock>) -> String {
    let mut c = format!(
        "github:\n  clone_url: \"{}\"\ntest:\n  sandbox: off\n",
        gh.world().clone_url()
    );
    if let Some(m) = model {
        c.push_str(&format!(
            "models:\n  a:\n    provider: anthropic\n    model_id: claude-x\n    base_url: {}\n    price: {{input_per_mtok: 3.0, output_per_mtok: 15.0}}\nmodel: a\nrepair:\n  candidates: 1\n",
            m.server.uri()
        ));
    }
    c
}

/// Issue `number` by a reporter nobody knows, labelled `autotriage:fix` by `adder`.
fn labelled_issue(gh: &FakeGithub, number: u64, title: &str, adder: &str) {
    let mut w = gh.world();
    w.add_issue(
        "o/r",
        number,
        title,
        "`add(2, 2)` returns 0 in src/lib.rs; it should return 4.",
        "reporter",
        "NONE",
        &[],
    );
    w.label_issue("o/r", number, "autotriage:fix", adder);
}

/// Store a triage of each issue in memory (offline: no model yet).
fn stored_triage(gh: &FakeGithub, t: &TestContext, numbers: &[u64]) {
    t.write("autotriage.yaml", &fix_config(gh, None));
    for n in numbers {
        let r = format!("o/r#{n}");
        let o = gh.run(t, BOT, &["triage", &r, "--from", "github", "--json"]);
        assert_eq!(code(&o), 0, "{}", stderr(&o));
    }
    let o = t.run(&["memory", "export", "--jsonl"]);
    for n in numbers {
        assert!(
            stdout(&o).contains(&format!("\"number\":{n}")),
            "#{n} is in memory: {}",
            stdout(&o)
        );
    }
}

/// Nothing was written to the fake since `from`, and no branch of ours exists.
fn assert_nothing_written(gh: &FakeGithub, from: usize, number: u64) {
    assert_eq!(writes_since(gh, from), Vec::<Write>::new());
    let w = gh.world();
    assert!(w.repo("o/r").pulls.is_empty());
    assert!(w.issue("o/r", number).comments.is_empty());
    drop(w);
    assert_eq!(branches(gh, "autotriage/"), Vec::<String>::new());
}

#[test]
fn attack_a_readers_trigger_label_after_a_stored_triage_is_refused() {
    let gh = world();
    labelled_issue(&gh, 5, "add() subtracts instead of adding", "stranger");
    let t = TestContext::new();
    stored_triage(&gh, &t, &[5]);
    let m = model();
    t.write("autotriage.yaml", &fix_config(&gh, Some(&m)));
    let before = gh.world().log.len();
    let o = run_with_key(&gh, &t, BOT, &["fix", "o/r#5"]);
    assert_eq!(code(&o), 3, "{}\n{}", stdout(&o), stderr(&o));
    let err = stderr(&o);
    assert!(err.contains("not eligible"), "{err}");
    assert!(
        err.contains("stranger"),
        "the message names the adder: {err}"
    );
    assert_eq!(m.requests().len(), 0, "the model was asked");
    assert_nothing_written(&gh, before, 5);
    assert_absent(&t, &[&o], MODEL_SENTINEL, &[]);
    // No candidate was made or kept.
    for r in std::fs::read_dir(state_dir(&t).join("runs"))
        .unwrap()
        .flatten()
    {
        assert!(
            !r.path().join("candidates.json").exists(),
            "{}",
            r.path().display()
        );
        assert!(
            !r.path().join("candidates").exists(),
            "{}",
            r.path().display()
        );
    }

    // `--from memory` cannot decide trust: it refuses and names --force.
    let o2 = run_with_key(&gh, &t, BOT, &["fix", "--from", "memory", "o/r#5"]);
    assert_eq!(code(&o2), 3, "{}", stderr(&o2));
    assert!(stderr(&o2).contains("--force"), "{}", stderr(&o2));
    assert_eq!(m.requests().len(), 0);
    assert_nothing_written(&gh, before, 5);
    assert_no_secrets(&t, &[&o, &o2]);
}

#[test]
fn attack_a_readers_trigger_label_is_refused_in_a_batch() {
    let gh = world();
    let untrusted_title = "add() subtracts, says a drive-by labeller";
    labelled_issue(&gh, 5, untrusted_title, "stranger");
    gh.world().add_issue(
        "o/r",
        6,
        "add() subtracts (seen by a maintainer)",
        "`add(2, 2)` returns 0 in src/lib.rs; it should return 4.",
        "maint",
        "COLLABORATOR",
        &[],
    );
    let t = TestContext::new();
    stored_triage(&gh, &t, &[5, 6]);
    let m = model();
    t.write("autotriage.yaml", &fix_config(&gh, Some(&m)));
    let before = gh.world().log.len();
    let o = run_with_key(
        &gh,
        &t,
        BOT,
        &["fix", "o/r#5", "o/r#6", "--until", "repair"],
    );
    assert_eq!(code(&o), 3, "{}\n{}", stdout(&o), stderr(&o));
    let out = stdout(&o);
    assert!(
        out.lines()
            .any(|l| l.starts_with("o/r#5") && l.contains("not eligible")),
        "{out}"
    );
    assert!(
        !out.lines()
            .any(|l| l.starts_with("o/r#6") && l.contains("not eligible")),
        "{out}"
    );
    // The trusted issue reached the model; the untrusted one never did.
    let asked: Vec<String> = m
        .requests()
        .iter()
        .map(|r| String::from_utf8_lossy(&r.body).into_owned())
        .collect();
    assert!(!asked.is_empty(), "#6 reached repair");
    assert!(
        asked.iter().all(|b| !b.contains(untrusted_title)),
        "the model was asked about #5"
    );
    assert_eq!(writes_since(&gh, before), Vec::<Write>::new());
    // #5's runs hold nothing of the model's.
    let runs_of_5: Vec<PathBuf> = std::fs::read_dir(state_dir(&t).join("runs"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|d| {
            std::fs::read_to_string(d.join("run.json"))
                .ok()
                .and_then(|m| serde_json::from_str::<Value>(&m).ok())
                .is_some_and(|m| m["number"] == 5)
        })
        .collect();
    assert!(!runs_of_5.is_empty());
    for d in &runs_of_5 {
        assert_eq!(grep_tree(d, MODEL_SENTINEL), Vec::<PathBuf>::new());
    }
    assert_no_secrets(&t, &[&o]);
}

#[test]
fn a_writers_trigger_label_after_a_stored_triage_is_eligible() {
    // The positive control: the same issue, labelled by a collaborator who can write.
    let gh = world();
    labelled_issue(&gh, 5, "add() subtracts instead of adding", "maint");
    let t = TestContext::new();
    stored_triage(&gh, &t, &[5]);
    let m = model();
    t.write("autotriage.yaml", &fix_config(&gh, Some(&m)));
    let o = run_with_key(&gh, &t, BOT, &["fix", "o/r#5", "--until", "repair"]);
    assert!(
        !stderr(&o).contains("not eligible"),
        "{}\n{}",
        stdout(&o),
        stderr(&o)
    );
    assert!(
        !m.requests().is_empty(),
        "repair was reached: {}",
        stderr(&o)
    );
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_no_secrets(&t, &[&o]);
}

// ---------------------------------------------------------------------------------
// 6. Hostile issue text
// ---------------------------------------------------------------------------------

const HOSTILE: &[&str] = &["@acme", "@everyone", "<img", "Closes #104", "fixes o/r#7"];

/// The text with invisible characters shown, run ids and SHAs replaced.
fn normalise(text: &str, run_id: &str, shas: &[&str]) -> String {
    let mut out = text.replace(run_id, "RUN_ID").replace('\u{200B}', "{ZWSP}");
    for s in shas {
        out = out.replace(s, "SHA").replace(&s[..12], "SHA12");
    }
    out
}

#[test]
fn attack_hostile_issue_text_is_inert_in_the_pr_the_commit_and_the_comment() {
    let gh = world();
    let mut title = String::from(
        "@acme/maintainers @everyone <img src=x onerror=alert(1)> Closes #104 fixes o/r#7 add() subtracts ",
    );
    while title.chars().count() < 400 {
        title.push_str("and more ");
    }
    let title: String = title.chars().take(400).collect();
    let body = "Ping @acme/maintainers and @everyone: <img src=x onerror=alert(1)>\nCloses #104, fixes o/r#7.\n\nA second paragraph with @someone.\n";
    gh.world()
        .add_issue("o/r", 5, &title, body, "reporter", "NONE", &[]);
    let t = sandbox();
    let o = pr_github(&gh, &t, 5, "fix.diff");
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let v = json(&o);
    let run_id = v["run_id"].as_str().unwrap().to_string();
    let (pr_title, pr_body, comment) = {
        let w = gh.world();
        let r = w.repo("o/r");
        assert_eq!(r.pulls.len(), 1);
        let comments = &w.issue("o/r", 5).comments;
        assert_eq!(comments.len(), 1);
        (
            r.pulls[0].title.clone(),
            r.pulls[0].body.clone(),
            comments[0].body.clone(),
        )
    };
    let commit_sha = head(&gh, "autotriage/issue-5").expect("the branch");
    let base_sha = head(&gh, "main").unwrap();
    let message = {
        let w = gh.world();
        let git = w.repo("o/r").repo();
        let c = git
            .find_commit(git2::Oid::from_str(&commit_sha).unwrap())
            .unwrap();
        c.message().unwrap().to_string()
    };
    for (what, text) in [
        ("PR title", &pr_title),
        ("PR body", &pr_body),
        ("commit message", &message),
        ("link comment", &comment),
    ] {
        for h in HOSTILE {
            assert!(!text.contains(h), "{what} carries {h:?}: {text}");
        }
    }
    assert!(
        pr_title.chars().count() <= 256,
        "{} chars",
        pr_title.chars().count()
    );
    assert!(pr_title.starts_with("Fix #5: "), "{pr_title}");
    assert!(pr_body.contains("\nFixes #5\n"), "{pr_body}");
    assert!(message.contains("Autotriage-Run: "), "{message}");
    // The description we keep is the one we sent.
    let pr_md =
        std::fs::read_to_string(state_dir(&t).join("runs").join(&run_id).join("pr.md")).unwrap();
    assert_eq!(pr_md, pr_body);
    for h in HOSTILE {
        assert_absent(&t, &[&o], h, &["issue.json"]);
    }
    assert_no_secrets(&t, &[&o]);
    let shas = [commit_sha.as_str(), base_sha.as_str()];
    insta::assert_snapshot!("hostile_issue_pr_body", normalise(&pr_body, &run_id, &shas));
    insta::assert_snapshot!(
        "hostile_issue_commit_message",
        normalise(&message, &run_id, &shas)
    );
}

// ---------------------------------------------------------------------------------
// 7. Labels
// ---------------------------------------------------------------------------------

/// Issue 7, which triage (with the example history) calls a bug.
fn bug_issue(gh: &FakeGithub) {
    gh.world().add_issue(
        "o/r",
        7,
        "Images missing from output after upgrade",
        "Since upgrading, images from `static/` are not copied to `dist/` anymore.",
        "reporter",
        "NONE",
        &[],
    );
}

#[test]
fn attack_a_triage_label_the_repository_lacks_is_not_created() {
    let gh = world();
    bug_issue(&gh);
    let t = TestContext::new();
    import_history(&t);
    let args = ["triage", "o/r#7", "--from", "github", "--apply", "--json"];
    let o = gh.run(&t, BOT, &args);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let v = json(&o);
    assert_eq!(v["applied"]["labels_skipped"], json!(["bug"]), "{v:#}");
    assert_eq!(v["applied"]["labels_added"], json!([]), "{v:#}");
    {
        let w = gh.world();
        assert!(w.repo("o/r").label("bug").is_none(), "a label was created");
        assert!(w.issue("o/r", 7).labels.is_empty());
        assert!(
            !w.writes("o/r")
                .iter()
                .any(|x| x.path.ends_with("/labels") || x.detail.contains("created label")),
            "{:#?}",
            w.writes("o/r")
        );
    }
    // In words too.
    let text = gh.run(&t, BOT, &["triage", "o/r#7", "--from", "github", "--apply"]);
    assert_eq!(code(&text), 0, "{}", stderr(&text));
    assert!(
        stdout(&text).contains("not applied: bug"),
        "{}",
        stdout(&text)
    );

    // With github.create_labels it is created, then applied.
    t.write("autotriage.yaml", "github:\n  create_labels: true\n");
    let before = gh.world().log.len();
    let o2 = gh.run(&t, BOT, &args);
    assert_eq!(code(&o2), 0, "{}", stderr(&o2));
    let v = json(&o2);
    assert_eq!(v["applied"]["labels_created"], json!(["bug"]), "{v:#}");
    assert_eq!(v["applied"]["labels_added"], json!(["bug"]), "{v:#}");
    let w = gh.world();
    assert!(w.repo("o/r").label("bug").is_some());
    assert_eq!(w.issue("o/r", 7).labels, vec!["bug"]);
    let label_writes: Vec<String> = w.log[before..]
        .iter()
        .filter(|x| x.path.ends_with("/labels"))
        .map(|x| format!("{} {} {} {}", x.method, x.path, x.status, x.detail))
        .collect();
    assert_eq!(
        label_writes,
        vec![
            "POST /repos/o/r/labels 201 created label \"bug\"".to_string(),
            "POST /repos/o/r/issues/7/labels 200 labeled \"bug\"".to_string(),
        ]
    );
    drop(w);
    assert_no_secrets(&t, &[&o, &text, &o2]);
}

#[test]
fn attack_odd_pr_label_names_stay_one_path_segment() {
    let odd = ["area/ui", "why?", "#1", "100%", "🐛 bug"];
    let gh = world_with_issue(3);
    for l in odd {
        gh.world().add_label("o/r", l);
    }
    let labels_before = gh.world().repo("o/r").labels.len();
    let t = sandbox();
    t.write(
        "autotriage.yaml",
        "github:\n  pr_labels: [\"area/ui\", \"why?\", \"#1\", \"100%\", \"🐛 bug\", \"not-in-repo\"]\n",
    );
    let o = pr_github(&gh, &t, 3, "fix.diff");
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let v = json(&o);
    assert_eq!(v["github"]["labels_added"], json!(odd), "{v:#}");
    assert_eq!(
        v["github"]["labels_skipped"],
        json!(["not-in-repo"]),
        "{v:#}"
    );
    let w = gh.world();
    let r = w.repo("o/r");
    assert_eq!(r.pulls.len(), 1);
    assert_eq!(r.pulls[0].labels, odd.to_vec());
    assert_eq!(r.labels.len(), labels_before, "no label was created");
    assert!(r.label("not-in-repo").is_none());
    assert!(
        w.writes("o/r").iter().all(Write::ok),
        "{:#?}",
        w.writes("o/r")
    );
    drop(w);
    // No label name went into a request path.
    let paths: Vec<String> = gh
        .requests()
        .iter()
        .map(|r| r.url.path().to_string())
        .filter(|p| p.contains("/labels"))
        .collect();
    assert!(!paths.is_empty());
    assert!(
        paths.iter().all(|p| p.ends_with("/labels")),
        "a label name reached a path: {paths:#?}"
    );
    assert_no_secrets(&t, &[&o]);
}

// ---------------------------------------------------------------------------------
// 8. Exit codes, one row each
// ---------------------------------------------------------------------------------

/// `triage o/r#N --from github` with `token`.
fn read_issue(gh: &FakeGithub, t: &TestContext, token: &str, number: u64) -> Output {
    let r = format!("o/r#{number}");
    gh.run(t, token, &["triage", &r, "--from", "github"])
}

#[test]
fn exit_code_a_refused_token_401_is_2() {
    let gh = world_with_issue(3);
    let t = TestContext::new();
    let o = read_issue(&gh, &t, "ghp_nobodyknowsthistoken000000000000000", 3);
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    assert!(stderr(&o).contains("401"), "{}", stderr(&o));
    assert_absent(&t, &[&o], "ghp_nobodyknowsthistoken000000000000000", &[]);
}

#[test]
fn exit_code_a_missing_issue_404_is_2() {
    let gh = world_with_issue(3);
    let t = TestContext::new();
    let o = read_issue(&gh, &t, BOT, 99);
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    assert!(stderr(&o).contains("404"), "{}", stderr(&o));
}

#[test]
fn exit_code_a_forbidden_write_403_is_2() {
    // A stranger's token tries to apply a triage: GitHub answers 403.
    let gh = world();
    gh.world().add_label("o/r", "bug");
    bug_issue(&gh);
    let t = TestContext::new();
    import_history(&t);
    let o = gh.run(
        &t,
        STRANGER,
        &["triage", "o/r#7", "--from", "github", "--apply"],
    );
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    assert!(stderr(&o).contains("403"), "{}", stderr(&o));
    let w = gh.world();
    assert!(w.writes("o/r").iter().any(|x| x.status == 403));
    assert!(w.writes("o/r").iter().all(|x| !x.ok()));
    drop(w);
    assert_no_secrets(&t, &[&o]);
}

#[test]
fn exit_code_a_refused_write_422_is_1() {
    let gh = world_with_issue(3);
    gh.http.mount(
        Mock::given(method("POST"))
            .and(path("/repos/o/r/pulls"))
            .respond_with(ResponseTemplate::new(422).set_body_json(json!({
                "message": "Validation Failed",
                "errors": [{"resource": "PullRequest", "code": "custom", "message": "refused by the test"}],
            })))
            .with_priority(1),
    );
    let t = sandbox();
    let o = pr_github(&gh, &t, 3, "fix.diff");
    assert_eq!(code(&o), 1, "{}", stderr(&o));
    assert!(stderr(&o).contains("422"), "{}", stderr(&o));
    assert!(gh.world().repo("o/r").pulls.is_empty());
}

#[test]
fn exit_code_a_server_error_past_the_retries_is_1() {
    let gh = world_with_issue(9);
    gh.http.mount(
        Mock::given(method("GET"))
            .and(path("/repos/o/r/issues/9"))
            .respond_with(ResponseTemplate::new(502).set_body_string("bad gateway"))
            .with_priority(1),
    );
    let t = TestContext::new();
    t.write("autotriage.yaml", "retry:\n  max_wait: 1\n");
    let started = std::time::Instant::now();
    let o = read_issue(&gh, &t, BOT, 9);
    assert_eq!(code(&o), 1, "{}", stderr(&o));
    assert!(started.elapsed().as_secs() < 30);
    let tries = gh
        .requests()
        .iter()
        .filter(|r| r.url.path() == "/repos/o/r/issues/9")
        .count();
    assert!(tries >= 2, "retried: {tries} request(s)");
}

#[test]
fn exit_code_an_exhausted_rate_limit_is_1() {
    let gh = world_with_issue(9);
    let reset = (chrono::Utc::now().timestamp() + 3600).to_string();
    gh.http.mount(
        Mock::given(method("GET"))
            .and(path("/repos/o/r/issues/9"))
            .respond_with(
                ResponseTemplate::new(403)
                    .insert_header("x-ratelimit-remaining", "0")
                    .insert_header("x-ratelimit-reset", reset.as_str())
                    .set_body_json(json!({"message": "API rate limit exceeded"})),
            )
            .with_priority(1),
    );
    let t = TestContext::new();
    t.write("autotriage.yaml", "retry:\n  max_wait: 1\n");
    let o = read_issue(&gh, &t, BOT, 9);
    assert_eq!(code(&o), 1, "{}", stderr(&o));
}

#[test]
fn exit_code_an_unreachable_github_is_1() {
    let t = TestContext::new();
    t.write("autotriage.yaml", "retry:\n  max_wait: 1\n");
    let port = crate::suite::common::free_port();
    let o = t
        .cmd()
        .env("GITHUB_TOKEN", BOT)
        .env("GITHUB_API_URL", format!("http://127.0.0.1:{port}"))
        .args(["triage", "o/r#3", "--from", "github"])
        .output()
        .unwrap();
    assert_eq!(code(&o), 1, "{}", stderr(&o));
    assert_absent(&t, &[&o], BOT, &[]);
}

#[test]
fn exit_code_a_partial_publish_is_1_and_the_issue_is_still_linked() {
    // The PR exists when labelling it fails: the link comment is still posted.
    let gh = world_with_issue(3);
    gh.world().add_label("o/r", "autotriage");
    gh.http.mount(
        Mock::given(method("POST"))
            .and(path("/repos/o/r/issues/4/labels"))
            .respond_with(ResponseTemplate::new(500).set_body_json(json!({"message": "boom"})))
            .with_priority(1),
    );
    let t = sandbox();
    t.write("autotriage.yaml", "github:\n  pr_labels: [autotriage]\n");
    let o = pr_github(&gh, &t, 3, "fix.diff");
    assert_eq!(code(&o), 1, "{}", stderr(&o));
    assert!(stderr(&o).contains("label"), "{}", stderr(&o));
    let w = gh.world();
    assert_eq!(w.repo("o/r").pulls.len(), 1);
    let comments = &w.issue("o/r", 3).comments;
    assert_eq!(comments.len(), 1);
    assert!(comments[0].body.contains("https://github.com/o/r/pull/4"));
}

#[test]
fn exit_code_no_token_is_2() {
    let gh = world_with_issue(3);
    let t = TestContext::new();
    // No GITHUB_TOKEN, and no `gh` on PATH to ask.
    let empty = tempfile::tempdir().unwrap();
    let o = t
        .cmd()
        .env("GITHUB_API_URL", gh.url())
        .env("PATH", empty.path())
        .args(["triage", "o/r#3", "--from", "github"])
        .output()
        .unwrap();
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    assert!(stderr(&o).contains("GITHUB_TOKEN"), "{}", stderr(&o));
    assert!(
        gh.requests().is_empty(),
        "nothing was asked without a token"
    );
}

/// Spawn the binary against the fake with stdout (and, when `close_stderr`, stderr)
/// a pipe whose reader is gone before the process writes; its exit code and stderr.
fn run_with_closed_pipes(
    gh: &FakeGithub,
    t: &TestContext,
    args: &[&str],
    close_stderr: bool,
) -> (Option<i32>, String) {
    let mut cmd = std::process::Command::new(assert_cmd::cargo::cargo_bin("autotriage"));
    cmd.current_dir(t.path())
        .env_clear()
        .env("HOME", t.home.path())
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("NO_COLOR", "1")
        .env("GITHUB_TOKEN", BOT)
        .env("GITHUB_API_URL", gh.url())
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    drop(child.stdout.take());
    let err = if close_stderr {
        drop(child.stderr.take());
        String::new()
    } else {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut s).unwrap();
        s
    };
    let status = child.wait().unwrap();
    (status.code(), err)
}

#[test]
fn exit_code_a_closed_stdout_ends_quietly() {
    let gh = world_with_issue(3);
    let t = TestContext::new();
    let (status, err) =
        run_with_closed_pipes(&gh, &t, &["triage", "o/r#3", "--from", "github"], false);
    assert!(!err.contains("panicked"), "{err}");
    assert_ne!(status, Some(101), "{err}");
    assert_eq!(status, Some(0), "{err}");
}

#[test]
fn exit_code_a_closed_stderr_ends_quietly() {
    // `… 2>&1 | head -1`: both closed; a failing command still ends with its own code.
    let gh = world_with_issue(3);
    let t = TestContext::new();
    let (status, _) =
        run_with_closed_pipes(&gh, &t, &["triage", "o/r#99", "--from", "github"], true);
    assert_ne!(
        status,
        Some(101),
        "the process panicked writing to a closed stderr"
    );
    assert_eq!(status, Some(2));
}

// ---------------------------------------------------------------------------------
// 6b. Hostile text of another issue, quoted in the triage comment
// ---------------------------------------------------------------------------------

#[test]
fn attack_a_hostile_duplicate_title_is_inert_in_the_triage_comment() {
    // A stranger files an issue whose title pings and carries HTML and a closing
    // keyword, then the same report again: the bot's "likely a duplicate of" comment
    // on the second quotes the first one's title.
    let gh = world();
    let body = "Since upgrading to 2.0, images from `static/` are not copied to `dist/` anymore when running the build command.";
    let hostile = "@everyone @acme/maintainers <img src=x onerror=alert(1)> Closes #104 images missing from dist after upgrade";
    {
        let mut w = gh.world();
        w.add_issue("o/r", 8, hostile, body, "stranger", "NONE", &[]);
        w.add_issue(
            "o/r",
            9,
            "Images missing from dist after upgrade",
            body,
            "stranger",
            "NONE",
            &[],
        );
    }
    let t = TestContext::new();
    import_history(&t);
    let o = gh.run(&t, BOT, &["triage", "o/r#8", "--from", "github", "--json"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let o = gh.run(
        &t,
        BOT,
        &["triage", "o/r#9", "--from", "github", "--apply", "--json"],
    );
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let v = json(&o);
    assert!(
        v["duplicates"]
            .as_array()
            .is_some_and(|d| d.iter().any(|d| d["ref"] == "o/r#8" && d["likely"] == true)),
        "the setup makes #8 a likely duplicate: {v:#}"
    );
    let w = gh.world();
    let comments = &w.issue("o/r", 9).comments;
    assert_eq!(comments.len(), 1, "{v:#}");
    let c = &comments[0].body;
    assert!(c.contains("o/r#8"), "{c}");
    for h in HOSTILE {
        assert!(!c.contains(h), "the triage comment carries {h:?}: {c}");
    }
}
