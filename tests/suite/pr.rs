use crate::suite::common::*;

const BASE: &str = "pub fn add(a: i32, b: i32) -> i32 {\n    a - b\n}\n";

const FIX: &str = "diff --git a/src/lib.rs b/src/lib.rs\n--- a/src/lib.rs\n+++ b/src/lib.rs\n@@ -1,3 +1,3 @@\n pub fn add(a: i32, b: i32) -> i32 {\n-    a - b\n+    a + b\n }\n";

/// A checkout with one commit and an issue file.
fn checkout() -> (TestContext, git2::Oid) {
    let t = TestContext::new();
    let repo = git2::Repository::init(t.path()).unwrap();
    t.write("src/lib.rs", BASE);
    t.write(".gitignore", ".autotriage/\n");
    let mut index = repo.index().unwrap();
    index.add_path(std::path::Path::new("src/lib.rs")).unwrap();
    index.add_path(std::path::Path::new(".gitignore")).unwrap();
    let tree = repo.find_tree(index.write_tree().unwrap()).unwrap();
    let sig = git2::Signature::now("t", "t@example.com").unwrap();
    let head = repo
        .commit(Some("HEAD"), &sig, &sig, "init", &tree, &[])
        .unwrap();
    t.write(
        "issues/3.md",
        "---\nrepo: acme/calc\ntitle: add() subtracts\n---\n`add(2, 2)` returns 0 instead of 4.\n",
    );
    t.write("fix.diff", FIX);
    (t, head)
}

fn file_on_branch(t: &TestContext, branch: &str, path: &str) -> Option<String> {
    let repo = git2::Repository::open(t.path()).unwrap();
    let commit = repo
        .find_reference(&format!("refs/heads/{branch}"))
        .ok()?
        .peel_to_commit()
        .ok()?;
    let blob = commit
        .tree()
        .unwrap()
        .get_path(std::path::Path::new(path))
        .ok()?
        .to_object(&repo)
        .ok()?
        .peel_to_blob()
        .ok()?;
    Some(String::from_utf8_lossy(blob.content()).into_owned())
}

#[test]
fn pr_commits_the_patch_on_a_branch_and_leaves_the_worktree_alone() {
    let (t, head) = checkout();
    t.write("src/lib.rs", &format!("{BASE}// my uncommitted work\n"));
    let o = t.run(&["pr", "issues/3.md", "--patch", "fix.diff", "--json"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let v = json(&o);
    assert_eq!(v["branch"], "autotriage/issue-3");
    assert_eq!(v["status"], "created");
    assert_eq!(
        v["files"],
        serde_json::json!([{"path": "src/lib.rs", "added": 1, "removed": 1}])
    );
    assert_eq!(
        file_on_branch(&t, "autotriage/issue-3", "src/lib.rs").unwrap(),
        BASE.replace("a - b", "a + b")
    );
    // Memory keeps the fix: the files it changed are the prior for similar issues.
    let export = stdout(&t.run(&["memory", "export", "--jsonl"]));
    let fix: serde_json::Value = export
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|r| r["type"] == "fix")
        .unwrap();
    assert_eq!(fix["repo"], "acme/calc");
    assert_eq!(fix["number"], 3);
    assert_eq!(fix["files"], serde_json::json!(["src/lib.rs"]));
    assert_eq!(fix["verdict"], "published");
    // The user's checkout: same HEAD, uncommitted work untouched.
    let repo = git2::Repository::open(t.path()).unwrap();
    assert_eq!(repo.head().unwrap().peel_to_commit().unwrap().id(), head);
    assert!(
        std::fs::read_to_string(t.path().join("src/lib.rs"))
            .unwrap()
            .ends_with("// my uncommitted work\n")
    );
    let commit = repo
        .find_reference("refs/heads/autotriage/issue-3")
        .unwrap()
        .peel_to_commit()
        .unwrap();
    assert_eq!(commit.summary().unwrap(), Some("Fix #3: add() subtracts"));
    assert_eq!(commit.parent_id(0).unwrap(), head);
    // The description.
    let body = std::fs::read_to_string(std::path::Path::new(v["body"].as_str().unwrap())).unwrap();
    let stable = body
        .replace(&head.to_string()[..12], "BASE")
        .replace(v["run_id"].as_str().unwrap(), "RUN");
    insta::assert_snapshot!("pr_body_local", stable);

    // Again: nothing changes.
    let o = t.run(&["pr", "issues/3.md", "--patch", "fix.diff", "--json"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(json(&o)["status"], "unchanged");
    assert_eq!(json(&o)["commit"], commit.id().to_string());
}

#[test]
fn a_patch_that_does_not_apply_names_the_file_and_hunk_and_writes_no_branch() {
    let (t, _) = checkout();
    t.write("stale.diff", &FIX.replace("-    a - b", "-    a * b"));
    let o = t.run(&["pr", "issues/3.md", "--patch", "stale.diff"]);
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains("the patch does not apply to")
            && err.contains("hunk 1 of src/lib.rs: the lines to find are not in src/lib.rs. The closest lines are 1-3:"),
        "{err}"
    );
    assert!(file_on_branch(&t, "autotriage/issue-3", "src/lib.rs").is_none());

    let o = t.run(&[
        "pr",
        "issues/3.md",
        "--patch",
        "fix.diff",
        "--dry-run",
        "--json",
    ]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(json(&o)["status"], "would be created");
    assert!(
        file_on_branch(&t, "autotriage/issue-3", "src/lib.rs").is_none(),
        "--dry-run writes no branch"
    );
}

#[test]
fn protected_and_escaping_paths_are_refused() {
    let (t, _) = checkout();
    for (name, path, reason) in [
        (
            "wf.diff",
            ".github/workflows/ci.yml",
            "it matches paths.protected",
        ),
        ("up.diff", "../outside.txt", "it leaves the repository"),
        ("git.diff", ".git/config", "it is inside .git/"),
    ] {
        t.write(name, &format!("diff --git a/{path} b/{path}\nnew file mode 100644\n--- /dev/null\n+++ b/{path}\n@@ -0,0 +1 @@\n+x\n"));
        let o = t.run(&["pr", "issues/3.md", "--patch", name]);
        assert_eq!(code(&o), 2, "{name}: {}", stderr(&o));
        assert!(stderr(&o).contains(reason), "{name}: {}", stderr(&o));
    }
    let o = t.run(&["pr", "issues/3.md", "--patch", "missing.diff"]);
    assert_eq!(code(&o), 2);
    assert!(
        stderr(&o).contains("cannot read the patch"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn pr_publishes_a_runs_chosen_candidate_with_its_evidence() {
    let (t, _) = checkout();
    let id = "20261124T000000Z-calc-3-abcd";
    let dir = t.path().join(".autotriage/runs").join(id);
    std::fs::create_dir_all(dir.join("candidates")).unwrap();
    std::fs::write(
        dir.join("run.json"),
        serde_json::json!({"schema_version": 1, "id": id, "reference": "acme/calc#3", "repo": "acme/calc", "number": 3, "command": "fix",
            "created_at": "2026-11-24T00:00:00Z", "updated_at": "2026-11-24T00:00:00Z", "stages": {}}).to_string(),
    )
    .unwrap();
    std::fs::write(dir.join("candidates/1.diff"), FIX).unwrap();
    std::fs::write(dir.join("test.json"), r#"{"chosen": 1, "verdict": "pass", "summary": "tests::add went fail to pass, no regressions"}"#).unwrap();
    let o = t.run(&["pr", "issues/3.md", "--run", id, "--json"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let v = json(&o);
    assert_eq!(v["status"], "created");
    let body = std::fs::read_to_string(std::path::Path::new(v["body"].as_str().unwrap())).unwrap();
    assert!(
        body.contains("verdict **pass**; tests::add went fail to pass, no regressions"),
        "{body}"
    );

    std::fs::remove_file(dir.join("test.json")).unwrap();
    let o = t.run(&["pr", "issues/3.md", "--run", id]);
    assert_eq!(code(&o), 2);
    assert!(
        stderr(&o).contains("has no chosen candidate"),
        "{}",
        stderr(&o)
    );
    let o = t.run(&["pr", "issues/3.md"]);
    assert_eq!(code(&o), 2, "--patch or --run is required");
}
