use crate::suite::common::*;

#[test]
fn unknown_key_names_key_file_and_line() {
    let t = TestContext::new();
    t.write(
        "autotriage.yaml",
        "repo: acme/widgets\ntriage:\n  threshold: 0.7\n  treshold: 0.5\n",
    );
    let o = t.run(&["config", "show"]);
    assert_eq!(code(&o), 2);
    let err = stderr(&o);
    assert!(err.contains("autotriage.yaml:4"), "{err}");
    assert!(err.contains("unknown key `triage.treshold`"), "{err}");
    assert!(err.contains("threshold"), "lists the known keys: {err}");
}

#[test]
fn wrong_type_and_bad_value_are_errors_with_lines() {
    let t = TestContext::new();
    t.write("autotriage.yaml", "test:\n  timeout: soon\n");
    let o = t.run(&["config", "show"]);
    assert_eq!(code(&o), 2);
    assert!(stderr(&o).contains("autotriage.yaml:2"), "{}", stderr(&o));

    t.write("autotriage.yaml", "test:\n  sandbox: sometimes\n");
    let o = t.run(&["memory", "stats"]);
    assert_eq!(code(&o), 2);
    assert!(
        stderr(&o).contains("unknown variant `sometimes`"),
        "{}",
        stderr(&o)
    );

    t.write("autotriage.yaml", "# top\nrepo: not-a-repo\n");
    let o = t.run(&["config", "show"]);
    assert_eq!(code(&o), 2);
    assert!(
        stderr(&o).contains("autotriage.yaml:2: `repo` is \"not-a-repo\", not owner/name"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn layers_merge_and_show_their_sources() {
    let t = TestContext::new();
    std::fs::create_dir_all(t.home.path().join(".config/autotriage")).unwrap();
    std::fs::write(
        t.home.path().join(".config/autotriage/config.yaml"),
        "triage:\n  threshold: 0.7\nretry:\n  max_wait: 5\n",
    )
    .unwrap();
    t.write(
        "autotriage.yaml",
        "repo: acme/widgets\ntriage:\n  threshold: 0.8\n",
    );
    let extra = t.write("extra.yaml", "retry:\n  max_wait: 9\n");
    let sub = t.path().join("a/b");
    std::fs::create_dir_all(&sub).unwrap();
    let o = t
        .cmd()
        .current_dir(&sub)
        .env("AUTOTRIAGE_MEMORY", "env.sqlite3")
        .args([
            "config",
            "show",
            "--json",
            "--config",
            extra.to_str().unwrap(),
            "--model",
            "anthropic:claude",
        ])
        .output()
        .unwrap();
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let v = json(&o);
    assert_eq!(v["config"]["repo"], "acme/widgets");
    assert_eq!(v["config"]["triage"]["threshold"], 0.8);
    assert_eq!(v["config"]["retry"]["max_wait"], 9);
    assert_eq!(v["config"]["model"], "anthropic:claude");
    assert!(
        v["config"]["memory"]["path"]
            .as_str()
            .unwrap()
            .ends_with("a/b/env.sqlite3")
    );
    let src = &v["sources"];
    assert!(
        src["triage.threshold"]
            .as_str()
            .unwrap()
            .ends_with("/autotriage.yaml")
    );
    assert!(
        src["retry.max_wait"]
            .as_str()
            .unwrap()
            .ends_with("extra.yaml")
    );
    assert_eq!(src["memory.path"], "env AUTOTRIAGE_MEMORY");
    assert_eq!(src["model"], "flag --model");
    assert_eq!(src["budget.per_issue_usd"], "default");

    // The flag beats the environment variable.
    let o = t
        .cmd()
        .env("AUTOTRIAGE_MEMORY", "env.sqlite3")
        .args(["config", "show", "--json", "--memory", "flag.sqlite3"])
        .output()
        .unwrap();
    assert_eq!(json(&o)["sources"]["memory.path"], "flag --memory");
}

#[test]
fn keys_of_one_section_from_two_layers_keep_their_sources() {
    let t = TestContext::new();
    std::fs::create_dir_all(t.home.path().join(".config/autotriage")).unwrap();
    std::fs::write(
        t.home.path().join(".config/autotriage/config.yaml"),
        "triage:\n  threshold: 0.7\n",
    )
    .unwrap();
    t.write("autotriage.yaml", "triage:\n  duplicate_threshold: 0.5\n");
    let v = json(&t.run(&["config", "show", "--json"]));
    assert_eq!(v["config"]["triage"]["threshold"], 0.7);
    assert_eq!(v["config"]["triage"]["duplicate_threshold"], 0.5);
    assert!(
        v["sources"]["triage.threshold"]
            .as_str()
            .unwrap()
            .ends_with(".config/autotriage/config.yaml"),
        "{v}"
    );
    assert!(
        v["sources"]["triage.duplicate_threshold"]
            .as_str()
            .unwrap()
            .ends_with("/autotriage.yaml")
    );
    let text = stdout(&t.run(&["config", "show"]));
    assert!(
        text.lines()
            .any(|l| l.starts_with("triage.threshold: 0.7") && l.ends_with("config.yaml")),
        "{text}"
    );
}

#[test]
fn missing_config_file_is_a_usage_error() {
    let t = TestContext::new();
    let o = t.run(&["config", "show", "--config", "nope.yaml"]);
    assert_eq!(code(&o), 2);
    assert!(stderr(&o).contains("nope.yaml"), "{}", stderr(&o));
}

#[test]
fn init_writes_config_and_gitignore_and_refuses_to_overwrite() {
    let t = TestContext::new();
    t.git_init("https://github.com/acme/widgets.git");
    t.write("Cargo.toml", "[package]\nname = \"x\"\n");
    t.write(".gitignore", "/target");
    let o = t.run(&["init"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let text = std::fs::read_to_string(t.path().join("autotriage.yaml")).unwrap();
    assert!(text.contains("repo: acme/widgets\n"), "{text}");
    assert!(text.contains("  command: cargo test"), "{text}");
    assert_eq!(
        std::fs::read_to_string(t.path().join(".gitignore")).unwrap(),
        "/target\n.autotriage/\n"
    );
    use std::os::unix::fs::PermissionsExt;
    for f in [".gitignore", "autotriage.yaml"] {
        let mode = std::fs::metadata(t.path().join(f))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o644, "{f}");
    }

    // The written file is a valid config.
    let o = t.run(&["config", "show", "--json"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(json(&o)["config"]["test"]["command"], "cargo test");

    let o = t.run(&["init"]);
    assert_eq!(code(&o), 2);
    assert!(stderr(&o).contains("already exists"), "{}", stderr(&o));
    assert_eq!(
        std::fs::read_to_string(t.path().join("autotriage.yaml")).unwrap(),
        text
    );

    let o = t.run(&["init", "--force"]);
    assert_eq!(code(&o), 0);
    // .gitignore is not extended twice.
    assert_eq!(
        std::fs::read_to_string(t.path().join(".gitignore")).unwrap(),
        "/target\n.autotriage/\n"
    );
}

#[test]
fn init_guesses_python_and_works_without_origin() {
    let t = TestContext::new();
    t.write("pyproject.toml", "[project]\nname='x'\n");
    let o = t.run(&["init", "--json"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(json(&o)["test_command"], "python -m pytest");
    assert_eq!(json(&o)["repo"], serde_json::Value::Null);
    let o = t.run(&["config", "show"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    // On a terminal-free run it says what the whole suite costs and how to narrow it.
    std::fs::create_dir_all(t.path().join("tests")).unwrap();
    let o = t.run(&["init", "--force"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(
        stdout(&o).contains("up to 4 times per candidate")
            && stdout(&o).contains("`python -m pytest tests -q -p no:cacheprovider`"),
        "{}",
        stdout(&o)
    );
}

#[test]
fn settings_from_the_environment_layer_over_the_files_and_say_where_they_came_from() {
    let t = TestContext::new();
    t.git_init("https://github.com/acme/app.git");
    t.write("autotriage.yaml", "repair:\n  rounds: 3\n");
    let o = t
        .cmd()
        .env(
            "AUTOTRIAGE_SET",
            "queue.backend=sqs; serve.repos=[acme/app, acme/*]\nrepair.rounds=2",
        )
        .args(["config", "show", "--json"])
        .output()
        .unwrap();
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let v = json(&o);
    assert_eq!(v["config"]["queue"]["backend"], "sqs");
    assert_eq!(
        v["config"]["serve"]["repos"],
        serde_json::json!(["acme/app", "acme/*"])
    );
    assert_eq!(v["config"]["repair"]["rounds"], 2);
    assert_eq!(v["sources"]["repair.rounds"], "env AUTOTRIAGE_SET");
    for (bad, why) in [
        ("queue.backend", "no `=`"),
        ("Queue.Backend=sqs", "not a dotted setting name"),
        ("queue.backend=nosuch", "unknown variant `nosuch`"),
    ] {
        let o = t
            .cmd()
            .env("AUTOTRIAGE_SET", bad)
            .args(["config", "show"])
            .output()
            .unwrap();
        assert_eq!(code(&o), 2, "{bad}: {}", stderr(&o));
        assert!(stderr(&o).contains(why), "{bad}: {}", stderr(&o));
    }
}
