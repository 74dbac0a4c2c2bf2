use crate::suite::common::*;

#[test]
fn runs_list_is_empty_and_show_of_a_missing_run_is_a_usage_error() {
    let t = TestContext::new();
    let o = t.run(&["runs", "list", "--json"]);
    assert_eq!(code(&o), 0);
    assert_eq!(json(&o)["runs"], serde_json::json!([]));
    let o = t.run(&["runs", "show", "20991231T000000Z-x-1-abcd"]);
    assert_eq!(code(&o), 2);
    assert!(stderr(&o).contains("runs list"), "{}", stderr(&o));
}

#[test]
fn runs_show_names_the_files_a_run_has() {
    let t = TestContext::new();
    t.write("i/1.md", "---\nrepo: o/r\ntitle: Crash\n---\nboom\n");
    let o = t.run(&["triage", "i/1.md", "--json"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let id = json(&o)["run_id"].as_str().unwrap().to_string();
    for bad in ["nothere.json", "../../autotriage.yaml"] {
        let o = t.run(&["runs", "show", &id, "--file", bad]);
        assert_eq!(code(&o), 2, "{bad}");
        assert!(
            stderr(&o).contains(
                "pick one of: events.jsonl, issue.json, run.json, triage.json, usage.json"
            ),
            "{}",
            stderr(&o)
        );
    }
    let o = t.run(&["runs", "show", "2"]);
    assert_eq!(code(&o), 0, "a unique prefix: {}", stderr(&o));
    let o = t.run(&["runs", "prune", "--older-than", "0", "--dry-run"]);
    assert!(stdout(&o).contains(&format!("would remove {id}")));
    assert!(t.path().join(".autotriage/runs").join(&id).exists());
    let o = t.run(&["runs", "prune", "--older-than", "0"]);
    assert!(stdout(&o).contains(&format!("removed {id}")));
    assert!(!t.path().join(".autotriage/runs").join(&id).exists());
}
