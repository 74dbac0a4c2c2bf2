use crate::suite::common::*;

#[test]
fn global_flags_work_before_and_after_the_subcommand() {
    let t = TestContext::new();
    let a = t.run(&["--json", "memory", "stats"]);
    let b = t.run(&["memory", "stats", "--json"]);
    assert_eq!(code(&a), 0, "{}", stderr(&a));
    assert_eq!(json(&a), json(&b));
    assert_eq!(json(&a)["schema_version"], 1);
    assert_eq!(json(&a)["stats"]["issues"], 0);
}

#[test]
fn usage_errors_exit_2() {
    let t = TestContext::new();
    let o = t.run(&["frobnicate"]);
    assert_eq!(code(&o), 2);
    let o = t.run(&["runs", "prune"]);
    assert_eq!(code(&o), 2);
    assert!(stderr(&o).contains("--older-than"), "{}", stderr(&o));
    for args in [
        &["runs", "prune", "--older-than", "999999999"][..],
        &["memory", "stats", "--jobs", "0"],
        &["memory", "stats", "--max-cost=-5"],
        &["memory", "stats", "--max-cost", "nan"],
    ] {
        let o = t.run(args);
        assert_eq!(code(&o), 2, "{args:?}");
    }
}

#[test]
fn completions_are_printed_for_each_shell() {
    let t = TestContext::new();
    for shell in ["bash", "zsh", "fish"] {
        let o = t.run(&["completions", shell]);
        assert_eq!(code(&o), 0);
        assert!(stdout(&o).contains("memory"), "{shell}");
    }
}

#[test]
fn read_commands_do_not_create_memory() {
    let t = TestContext::new();
    for args in [
        &["memory", "list"][..],
        &["memory", "search", "x"],
        &["memory", "stats"],
        &["runs", "list"],
    ] {
        let o = t.run(args);
        assert_eq!(code(&o), 0, "{args:?}: {}", stderr(&o));
    }
    assert!(!t.path().join(".autotriage").exists());
}

#[test]
fn bad_references_show_the_accepted_forms() {
    let t = TestContext::new();
    for (r, needle) in [
        ("https://github.com/o/r/pull/3", "is a pull request"),
        ("#12", "no git `origin`"),
        ("not a ref", "matches none"),
    ] {
        let o = t.run(&["memory", "show", r]);
        assert_eq!(code(&o), 2, "{r}");
        let err = stderr(&o);
        assert!(err.contains(needle), "{r}: {err}");
        assert!(err.contains("owner/repo#123"), "{r}: {err}");
    }
}

#[test]
fn hash_number_uses_the_origin() {
    let t = TestContext::new();
    t.git_init("git@github.com:acme/widgets.git");
    t.write(
        "issues/7.md",
        "---\ntitle: Seven\nrepo: acme/widgets\n---\nbody\n",
    );
    assert_eq!(code(&t.run(&["memory", "import", "issues"])), 0);
    let o = t.run(&["memory", "show", "#7", "--json"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(json(&o)["issue"]["title"], "Seven");
    // The memory lives at the git top level, also from a subfolder.
    let sub = t.path().join("src/deep");
    std::fs::create_dir_all(&sub).unwrap();
    let o = t
        .cmd()
        .current_dir(&sub)
        .args(["memory", "show", "7", "--json"])
        .output()
        .unwrap();
    assert_eq!(json(&o)["issue"]["number"], 7);
}
