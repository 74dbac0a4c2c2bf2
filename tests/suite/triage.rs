use std::path::Path;

use crate::suite::common::*;

fn examples() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/issues")
}

fn with_examples() -> TestContext {
    let t = TestContext::new();
    let o = t.run(&["memory", "import", examples().to_str().unwrap()]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    t
}

fn triage_json(t: &TestContext, r: &str) -> serde_json::Value {
    let o = t.run(&["triage", r, "--json"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    json(&o)
}

#[test]
fn a_clear_bug_is_labelled_prioritised_and_fixable() {
    let t = with_examples();
    let o = t.run(&["triage", "acme/widgets#23", "--json"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(
        stderr(&o)
            .contains("trained the kind model on 22 labelled issues (bug, feature, question)"),
        "{}",
        stderr(&o)
    );
    let v = json(&o);
    assert_eq!(v["schema_version"], 1);
    assert_eq!(v["ref"], "acme/widgets#23");
    assert_eq!(v["kind"], "bug");
    assert_eq!(v["abstained"], false);
    assert!(v["kind_confidence"].as_f64().unwrap() >= 0.6);
    assert_eq!(v["labels"][0]["name"], "bug");
    assert_eq!(v["priority"], "P1");
    assert!(
        v["priority_reasons"][0]
            .as_str()
            .unwrap()
            .starts_with("crash")
    );
    assert_eq!(v["missing"], serde_json::json!([]));
    assert_eq!(v["comment"], serde_json::Value::Null);
    assert_eq!(v["fixable"], true, "{v}");
    assert!(
        v["reasons"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r == "trusted: the author is a member")
    );

    // The run folder holds what DESIGN.md lists, and memory recorded the result.
    let run_id = v["run_id"].as_str().unwrap();
    let dir = t.path().join(".autotriage/runs").join(run_id);
    for f in [
        "run.json",
        "issue.json",
        "triage.json",
        "events.jsonl",
        "usage.json",
    ] {
        assert!(dir.join(f).is_file(), "{f} missing");
    }
    let stored: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("triage.json")).unwrap()).unwrap();
    assert_eq!(stored["kind"], "bug");
    let run: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("run.json")).unwrap()).unwrap();
    assert_eq!(run["stages"]["triage"]["status"], "done");
    assert_eq!(run["reference"], "acme/widgets#23");
    let o = t.run(&["memory", "show", "acme/widgets#23", "--json"]);
    assert_eq!(json(&o)["triage_results"][0]["kind"], "bug");
    let o = t.run(&["runs", "list", "--json"]);
    assert_eq!(json(&o)["runs"][0]["id"], run_id);
    let o = t.run(&["runs", "show", &run_id[..22], "--file", "triage.json"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(stdout(&o).contains("\"kind\": \"bug\""));
}

#[test]
fn a_vague_issue_abstains_and_a_feature_is_not_fixable() {
    let t = with_examples();
    let v = triage_json(&t, "acme/widgets#26");
    assert_eq!(v["kind"], serde_json::Value::Null);
    assert_eq!(v["abstained"], true);
    assert_eq!(v["labels"], serde_json::json!([]));
    assert_eq!(v["fixable"], false);
    assert!(
        v["reasons"][0]
            .as_str()
            .unwrap()
            .starts_with("needs a human"),
        "{v}"
    );

    let v = triage_json(&t, "acme/widgets#24");
    assert_eq!(v["kind"], "feature");
    assert_eq!(
        v["labels"][0]["name"], "enhancement",
        "the repository's label for features"
    );
    assert_eq!(v["priority"], "P3");
    assert_eq!(v["fixable"], false);
}

#[test]
fn missing_information_gets_the_exact_comment() {
    let t = with_examples();
    let v = triage_json(&t, "acme/widgets#28");
    assert_eq!(v["kind"], "bug");
    assert_eq!(
        v["missing"],
        serde_json::json!([
            "reproduction_steps",
            "expected_vs_actual",
            "version_environment",
            "logs_or_trace"
        ])
    );
    insta::assert_snapshot!("missing_info_comment", v["comment"].as_str().unwrap());
    assert_eq!(v["fixable"], false);
    // A regression of an earlier bug finds that bug as similar.
    let v = triage_json(&t, "acme/widgets#27");
    assert_eq!(v["duplicates"][0]["ref"], "acme/widgets#11");
    assert_eq!(v["duplicates"][0]["likely"], true);
    assert_eq!(v["fixable"], false);
    assert!(
        v["reasons"].as_array().unwrap().iter().any(|r| r
            .as_str()
            .unwrap()
            .starts_with("likely a duplicate of acme/widgets#11")),
        "{v}"
    );
}

fn write_history(t: &TestContext, bug_label: &str, feature_label: Option<&str>) {
    let bugs = [
        "Crash when saving a file",
        "Panic on startup with empty config",
        "Error when the path has spaces",
        "Segfault after upgrade",
        "Wrong output when input is empty",
        "Exception thrown on save",
    ];
    let features = [
        "Add support for YAML",
        "Please add a dark theme",
        "Support exporting to PDF",
        "Add a watch mode",
        "Allow custom templates",
        "Feature request: plugins",
    ];
    for (i, title) in bugs.iter().enumerate() {
        t.write(&format!("hist/{}.md", i + 1), &format!("---\nrepo: o/r\ntitle: \"{title}\"\nlabels: [{bug_label}]\nstate: closed\n---\nIt crashes with an error. Expected it to work, actual: error.\n"));
    }
    for (i, title) in features.iter().enumerate() {
        let labels = feature_label.unwrap_or("");
        t.write(&format!("hist/{}.md", i + 11), &format!("---\nrepo: o/r\ntitle: \"{title}\"\nlabels: [{labels}]\nstate: closed\n---\nIt would be nice to have this new feature, please add support.\n"));
    }
    let o = t.run(&["memory", "import", "hist"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
}

#[test]
fn labels_are_the_repositorys_own_and_never_invented() {
    let t = TestContext::new();
    t.write(
        "autotriage.yaml",
        "labels:\n  aliases:\n    bug: [bug, kind/bug]\n    feature: [enhancement, kind/feature]\n",
    );
    write_history(&t, "kind/bug", Some("kind/feature"));
    t.write("new/50.md", "---\nrepo: o/r\ntitle: Crash when saving with an empty path\nauthor_association: OWNER\n---\nIt crashes with an error.\n");
    let v = triage_json(&t, "new/50.md");
    assert_eq!(v["kind"], "bug");
    assert_eq!(
        v["labels"],
        serde_json::json!([{"name": "kind/bug", "confidence": v["kind_confidence"]}])
    );
}

#[test]
fn the_model_is_retrained_only_when_the_history_changes() {
    let t = TestContext::new();
    write_history(&t, "bug", Some("enhancement"));
    t.write(
        "new/50.md",
        "---\nrepo: o/r\ntitle: Crash on save\n---\nIt crashes.\n",
    );
    let o = t.run(&["triage", "new/50.md"]);
    assert!(
        stderr(&o).contains("trained the kind model on 12 labelled issues"),
        "{}",
        stderr(&o)
    );
    let first = stdout(&o);
    let o = t.run(&["triage", "new/50.md"]);
    assert!(!stderr(&o).contains("trained"), "{}", stderr(&o));
    // Same data, same model: the same verdict line.
    assert_eq!(first.lines().next(), stdout(&o).lines().next());
    t.write(
        "more/70.md",
        "---\nrepo: o/r\ntitle: Crash when exporting\nlabels: [bug]\n---\nerror\n",
    );
    assert_eq!(code(&t.run(&["memory", "import", "more"])), 0);
    let o = t.run(&["triage", "new/50.md"]);
    assert!(
        stderr(&o).contains("trained the kind model on 13 labelled issues"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn without_enough_history_triage_abstains_and_says_why() {
    let t = TestContext::new();
    t.write("one/1.md", "---\nrepo: o/r\ntitle: Crash\n---\nboom\n");
    let v = triage_json(&t, "one/1.md");
    assert_eq!(v["abstained"], true);
    assert_eq!(v["kind"], serde_json::Value::Null);
    assert!(
        v["reasons"][0]
            .as_str()
            .unwrap()
            .contains("too few to learn kinds"),
        "{v}"
    );
}

#[test]
fn batches_print_json_lines_and_report_bad_records() {
    let t = with_examples();
    std::fs::create_dir_all(t.path().join("batch")).unwrap();
    for n in ["023", "024", "025"] {
        std::fs::copy(
            examples().join(format!("{n}.md")),
            t.path().join(format!("batch/{n}.md")),
        )
        .unwrap();
    }
    t.write("batch/bad.md", "no front matter and no heading\n");
    let o = t.run(&["triage", "batch", "--json"]);
    assert_eq!(code(&o), 1, "{}", stderr(&o));
    let lines: Vec<serde_json::Value> = stdout(&o)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 4);
    let errors: Vec<&serde_json::Value> =
        lines.iter().filter(|l| l.get("error").is_some()).collect();
    assert_eq!(errors.len(), 1);
    assert!(errors[0]["ref"].as_str().unwrap().ends_with("bad.md:1"));
    let refs: Vec<&str> = lines
        .iter()
        .filter_map(|l| l["ref"].as_str())
        .filter(|r| r.starts_with("acme"))
        .collect();
    assert_eq!(
        refs,
        vec!["acme/widgets#23", "acme/widgets#24", "acme/widgets#25"]
    );
    // owner/repo: every open issue of the repository in memory.
    let o = t.run(&["triage", "acme/widgets", "--json"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(stdout(&o).lines().count(), 6);
}

#[test]
fn a_github_issue_not_in_memory_is_a_usage_error() {
    let t = TestContext::new();
    let o = t
        .cmd()
        .env("PATH", "/nonexistent")
        .args(["triage", "acme/widgets#999"])
        .output()
        .unwrap();
    assert_eq!(code(&o), 2);
    assert!(
        stderr(&o).contains("no GitHub token"),
        "not in memory, and GitHub cannot be read: {}",
        stderr(&o)
    );
    let o = t.run(&["triage", "acme/widgets#999", "--from", "memory"]);
    assert_eq!(code(&o), 2);
    assert!(stderr(&o).contains("is not in memory"), "{}", stderr(&o));
    assert!(!t.path().join(".autotriage/runs").exists());
    assert!(
        !t.memory_path().exists(),
        "a usage error leaves no memory file"
    );
}

#[test]
fn reactions_raise_the_priority() {
    let t = with_examples();
    let body = "Running `widgets build` fails with an error when a page is empty.\n\nExpected: the page builds. Actual: error.\n\nwidgets 1.3.0 on Debian 12";
    t.write(
        "new/40.md",
        &format!("---\nrepo: acme/widgets\ntitle: Build fails on an empty page\n---\n{body}\n"),
    );
    t.write("new/41.md", &format!("---\nrepo: acme/widgets\ntitle: Build fails on an empty page\nreactions: 25\n---\n{body}\n"));
    let quiet = triage_json(&t, "new/40.md");
    let loud = triage_json(&t, "new/41.md");
    assert_eq!(quiet["kind"], "bug", "{quiet}");
    assert_eq!(quiet["priority"], "P2", "{quiet}");
    assert_eq!(loud["priority"], "P1", "{loud}");
    assert!(
        loud["priority_reasons"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r == "25 reactions")
    );
}

#[test]
fn declared_labels_exist_before_any_issue_carries_them() {
    let t = with_examples();
    t.write("new/5.md", "---\nrepo: other/repo\ntitle: Crash when a page has an empty title\nauthor_association: OWNER\n---\nthread 'main' panicked at src/page.rs:57:22\n\nSteps to reproduce:\n1. run `widgets build`\n2. see the panic\n\nExpected: it builds. Actual: panic.\n\nwidgets 1.3.0\n");
    let v = triage_json(&t, "new/5.md");
    assert_eq!(v["kind"], "bug", "{v}");
    assert_eq!(v["labels"], serde_json::json!([]));
    assert!(
        v["reasons"].as_array().unwrap().iter().any(|r| r
            .as_str()
            .unwrap()
            .starts_with("no label applied: other/repo has no label for kind bug")),
        "{v}"
    );
    t.write(
        "autotriage.yaml",
        "labels:\n  descriptions:\n    bug: Something isn't working\n",
    );
    let v = triage_json(&t, "new/5.md");
    assert_eq!(v["labels"][0]["name"], "bug", "{v}");
}
