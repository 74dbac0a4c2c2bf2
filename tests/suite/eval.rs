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

/// Whether `python3 -m pytest` runs here (a skip locally, a failure in CI).
fn pytest_present() -> bool {
    let ok = std::process::Command::new("python3")
        .args(["-m", "pytest", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        assert!(
            !emulators_required(),
            "CI needs pytest (`pip install pytest`) for eval fix"
        );
        eprintln!("skipped: pytest is not installed");
    }
    ok
}

/// `git diff` of the working tree of `dir` against HEAD, then the tree put back.
fn diff_of(dir: &std::path::Path, files: &[(&str, &str)]) -> String {
    let before: Vec<(String, String)> = files
        .iter()
        .map(|(p, _)| {
            (
                p.to_string(),
                std::fs::read_to_string(dir.join(p)).unwrap_or_default(),
            )
        })
        .collect();
    for (p, text) in files {
        std::fs::write(dir.join(p), text).unwrap();
    }
    let o = std::process::Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(["diff", "HEAD"])
        .output()
        .unwrap();
    assert!(o.status.success());
    for (p, text) in before {
        std::fs::write(dir.join(p), text).unwrap();
    }
    String::from_utf8(o.stdout).unwrap()
}

const CALC_OPS: &str = "def add(a, b):\n    return a - b\n\n\ndef mul(a, b):\n    return a * b\n";
const CALC_TESTS: &str =
    "from calc.ops import add, mul\n\n\ndef test_mul():\n    assert mul(2, 3) == 6\n";

/// A repository `acme/calc` under `repos/acme__calc` with a bug in add(), and a dataset:
/// `acme__calc-1` (the real fix, a new test that shows it) and `acme__calc-2` (a test
/// that passes without the fix: its preflight fails).
fn calc_dataset(t: &TestContext) {
    let dir = t.path().join("repos/acme__calc");
    std::fs::create_dir_all(&dir).unwrap();
    let base = commit_files(
        &dir,
        &[
            ("calc/__init__.py", ""),
            ("calc/ops.py", CALC_OPS),
            ("tests/test_ops.py", CALC_TESTS),
            ("pyproject.toml", "[tool.pytest.ini_options]\n"),
        ],
        "init",
    );
    let patch = diff_of(
        &dir,
        &[("calc/ops.py", &CALC_OPS.replace("a - b", "a + b"))],
    );
    let test_patch = diff_of(
        &dir,
        &[(
            "tests/test_ops.py",
            &format!("{CALC_TESTS}\n\ndef test_add():\n    assert add(2, 3) == 5\n"),
        )],
    );
    let patch2 = diff_of(
        &dir,
        &[("calc/ops.py", &CALC_OPS.replace("a * b", "b * a"))],
    );
    let test_patch2 = diff_of(
        &dir,
        &[(
            "tests/test_ops.py",
            &format!("{CALC_TESTS}\n\ndef test_mul_again():\n    assert mul(3, 2) == 6\n"),
        )],
    );
    let record = |n: u32, patch: &str, test_patch: &str, f2p: &str| {
        serde_json::json!({
            "repo": "acme/calc", "instance_id": format!("acme__calc-{n}"),
            "base_commit": base.to_string(), "patch": patch, "test_patch": test_patch,
            "problem_statement": "add() subtracts\n`add(2, 3)` returns -1 instead of 5.",
            "version": "1.0",
            "FAIL_TO_PASS": serde_json::to_string(&[f2p]).unwrap(),
            "PASS_TO_PASS": "[\"tests/test_ops.py::test_mul\"]",
        })
        .to_string()
    };
    t.write(
        "dev.jsonl",
        &format!(
            "{}\n{}\n",
            record(1, &patch, &test_patch, "tests/test_ops.py::test_add"),
            record(
                2,
                &patch2,
                &test_patch2,
                "tests/test_ops.py::test_mul_again"
            )
        ),
    );
    t.write("envs.yaml", "acme/calc:\n  python: python3\n");
}

fn eval_fix(t: &TestContext, patches: &str, extra: &[&str]) -> serde_json::Value {
    let mut args = vec![
        "eval",
        "fix",
        "--dataset",
        "dev.jsonl",
        "--repos",
        "repos",
        "--envs",
        "envs.yaml",
        "--patches",
        patches,
        "--json",
    ];
    args.extend_from_slice(extra);
    let o = t.run(&args);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    json(&o)
}

#[test]
fn eval_fix_proves_the_real_patch_and_no_bad_one() {
    if !pytest_present() {
        return;
    }
    let t = TestContext::new();
    calc_dataset(&t);

    let v = eval_fix(&t, "real", &[]);
    assert_eq!(v["schema_version"], 1);
    assert_eq!(v["patches"], "real");
    assert_eq!(v["instances"], 2);
    assert_eq!(v["preflight_passed"], 1, "{v:#}");
    assert_eq!(v["proven"], 1, "{v:#}");
    assert_eq!(v["proven_rate"], 1.0);
    assert_eq!(v["false_passes"], 0);
    let one = &v["per_instance"][0];
    assert_eq!(one["instance_id"], "acme__calc-1");
    assert_eq!(one["preflight"], "ok");
    assert_eq!(one["verdict"], "fixed");
    assert_eq!(one["tree_equal"], true);
    assert_eq!(one["fail_to_pass_fixed"], true);
    assert!(one["seconds"].as_f64().unwrap() > 0.0);
    // The default command: the environment's python on the FAIL_TO_PASS files.
    assert_eq!(one["command"], "python3 -m pytest tests/test_ops.py");
    let two = &v["per_instance"][1];
    assert_eq!(two["preflight"], "excluded");
    assert!(
        two["reason"]
            .as_str()
            .unwrap()
            .contains("FAIL_TO_PASS passes without the fix: tests/test_ops.py::test_mul_again"),
        "{two}"
    );
    assert!(v["median_seconds"].as_f64().unwrap() > 0.0);

    // The test change alone must not be judged fixed.
    let v = eval_fix(&t, "tests-only", &["--instance", "acme__calc-1"]);
    assert_eq!(v["instances"], 1);
    assert_eq!(v["preflight_passed"], 1);
    assert_eq!(v["fixed"], 0, "{v:#}");
    assert_eq!(v["false_passes"], 0);
    assert_eq!(v["proven"], 0);
    assert_eq!(v["per_instance"][0]["verdict"], "failing");

    // Nor another instance's fix with this one's tests.
    let v = eval_fix(&t, "other", &["--limit", "1"]);
    assert_eq!(v["per_instance"][0]["other"], "acme__calc-2");
    assert_eq!(v["fixed"], 0, "{v:#}");
    assert_eq!(v["false_passes"], 0);

    // Text: the summary lines.
    let o = t.run(&[
        "eval",
        "fix",
        "--dataset",
        "dev.jsonl",
        "--repos",
        "repos",
        "--envs",
        "envs.yaml",
        "--instance",
        "acme__calc-2",
    ]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let out = stdout(&o);
    assert!(
        out.contains("1 instances, 0 passed the preflight, 1 excluded"),
        "{out}"
    );
    assert!(
        out.contains("acme__calc-2") && out.contains("excluded"),
        "{out}"
    );
}

#[test]
fn eval_fix_through_the_agents_tools_proves_what_the_pipeline_proves() {
    if !pytest_present() {
        return;
    }
    let t = TestContext::new();
    calc_dataset(&t);
    let pipeline = eval_fix(
        &t,
        "real",
        &["--instance", "acme__calc-1", "--sandbox", "required"],
    );
    let agent = eval_fix(
        &t,
        "real",
        &["--instance", "acme__calc-1", "--mode", "agent"],
    );
    assert_eq!(agent["proven"], pipeline["proven"], "{agent:#}");
    assert_eq!(agent["proven"], 1, "{agent:#}");
    let one = &agent["per_instance"][0];
    assert_eq!(one["verdict"], "fixed");
    assert_eq!(one["tree_equal"], true, "{one}");
    // The bad patch stays unproven through the agent too.
    let bad = eval_fix(
        &t,
        "tests-only",
        &["--instance", "acme__calc-1", "--mode", "agent"],
    );
    assert_eq!(bad["fixed"], 0, "{bad:#}");
    assert_eq!(bad["false_passes"], 0);
}

#[test]
fn eval_fix_bad_input_is_exit_2_and_a_missing_checkout_is_excluded() {
    let t = TestContext::new();
    t.write("envs.yaml", "acme/calc:\n  python: python3\n");
    std::fs::create_dir_all(t.path().join("repos")).unwrap();
    let o = t.run(&[
        "eval",
        "fix",
        "--dataset",
        "missing.jsonl",
        "--repos",
        "repos",
        "--envs",
        "envs.yaml",
    ]);
    assert_eq!(code(&o), 2);
    assert!(stderr(&o).contains("missing.jsonl"), "{}", stderr(&o));
    t.write("dev.jsonl", "{\"repo\": \"acme/calc\"}\n");
    let o = t.run(&[
        "eval",
        "fix",
        "--dataset",
        "dev.jsonl",
        "--repos",
        "repos",
        "--envs",
        "envs.yaml",
    ]);
    assert_eq!(code(&o), 2);
    assert!(stderr(&o).contains("dev.jsonl:1"), "{}", stderr(&o));
    t.write(
        "dev.jsonl",
        "{\"repo\": \"acme/calc\", \"instance_id\": \"acme__calc-1\", \"base_commit\": \"0000000000000000000000000000000000000000\", \"patch\": \"\", \"test_patch\": \"\", \"FAIL_TO_PASS\": \"[]\"}\n",
    );
    let v = eval_fix(&t, "real", &[]);
    assert_eq!(v["excluded"], 1);
    assert!(
        v["per_instance"][0]["reason"]
            .as_str()
            .unwrap()
            .starts_with("no checkout of acme/calc"),
        "{v}"
    );
}
