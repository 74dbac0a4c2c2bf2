use crate::suite::common::*;

fn labelled_csv(t: &TestContext) {
    let mut csv = String::from("title,body,label\n");
    for i in 0..30 {
        csv.push_str(&format!(
            "Crash number {i} on save,The app crashes with a panic and a stack trace,bug\n"
        ));
        csv.push_str(&format!(
            "Add option {i},It would be nice to support this new feature,feature\n"
        ));
        csv.push_str(&format!(
            "How do I configure {i}?,Question: how can I set this up,question\n"
        ));
    }
    t.write("labelled.csv", &csv);
}

#[test]
fn eval_triage_cross_validation_reports_fractions() {
    let t = TestContext::new();
    labelled_csv(&t);
    let o = t.run(&[
        "eval",
        "triage",
        "--data",
        "labelled.csv",
        "--folds",
        "3",
        "--seed",
        "7",
        "--json",
    ]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let v = json(&o);
    for key in ["macro_f1", "accuracy", "coverage", "precision_at_threshold"] {
        let x = v[key].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&x), "{key} = {x}");
    }
    assert_eq!(v["issues"], 90);
    assert!(v["macro_f1"].as_f64().unwrap() > 0.9, "separable data: {v}");
    assert_eq!(
        v["kinds"],
        serde_json::json!(["bug", "feature", "question"])
    );
    let o = t.run(&[
        "eval",
        "triage",
        "--train",
        "labelled.csv",
        "--test",
        "labelled.csv",
    ]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(stdout(&o).contains("macro-F1"));
}

#[test]
fn eval_duplicates_ranks_known_pairs() {
    let t = TestContext::new();
    t.write(
        "bugs.csv",
        "Issue id,Summary,Description,Priority\n1,NameNode crashes on startup,NullPointerException in FSNamesystem at startup,Blocker\n2,NameNode fails to start with NPE,FSNamesystem throws NullPointerException when starting,Critical\n3,Add metrics for DataNode,It would be nice to export disk metrics,Major\n4,Typo in docs,The word is misspelt,Trivial\n",
    );
    t.write(
        "pairs.jsonl",
        "{\"issue_id\": \"1\", \"duplicate_id\": \"2\"}\n",
    );
    let o = t.run(&[
        "eval",
        "duplicates",
        "--corpus",
        "bugs.csv",
        "--pairs",
        "pairs.jsonl",
        "--json",
    ]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let v = json(&o);
    assert_eq!(v["queries"], 2);
    assert_eq!(v["recall_at_1"], 1.0);
    assert_eq!(v["mrr"], 1.0);
    for key in ["recall_at_5", "recall_at_10"] {
        assert_eq!(v[key], 1.0);
    }
    let o = t.run(&["eval", "priority", "--corpus", "bugs.csv", "--json"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let v = json(&o);
    assert_eq!(v["issues"], 4);
    assert!(v["agreement"].as_f64().unwrap() <= 1.0);

    let o = t.run(&[
        "eval",
        "duplicates",
        "--corpus",
        "bugs.csv",
        "--pairs",
        "pairs.jsonl",
        "--title-column",
        "Title",
    ]);
    assert_eq!(code(&o), 2);
    assert!(
        stderr(&o).contains("no column \"Title\"") && stderr(&o).contains("--title-column"),
        "{}",
        stderr(&o)
    );
}
