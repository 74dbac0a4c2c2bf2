use std::time::{Duration, Instant};

use crate::suite::common::*;

fn import_fixtures(t: &TestContext) -> std::process::Output {
    let issues = data("issues");
    let json_file = data("issues.json");
    let csv_file = data("issues.csv");
    t.run(&[
        "memory",
        "import",
        issues.to_str().unwrap(),
        json_file.to_str().unwrap(),
        csv_file.to_str().unwrap(),
    ])
}

#[test]
fn import_reads_all_three_formats_and_reports_bad_records() {
    let t = TestContext::new();
    t.write("autotriage.yaml", "repo: acme/widgets\n");
    let o = import_fixtures(&t);
    // One gh record has no number, one CSV row has no title: exit 1, the rest imported.
    assert_eq!(code(&o), 1, "{}", stderr(&o));
    let err = stderr(&o);
    assert!(err.contains("issues.json record 3"), "{err}");
    assert!(
        err.contains("issues.csv:4 (row 3): empty \"title\" column"),
        "{err}"
    );
    assert!(
        stdout(&o).contains("imported 8 issues (8 new, 0 updated)"),
        "{}",
        stdout(&o)
    );

    let o = t.run(&["memory", "show", "acme/widgets#1", "--json"]);
    let issue = &json(&o)["issue"];
    assert_eq!(issue["title"], "Parser crashes on empty config file");
    assert_eq!(issue["labels"], serde_json::json!(["bug"]));
    assert_eq!(issue["author_association"], "MEMBER");
    assert_eq!(issue["state"], "closed");
    assert_eq!(issue["comments"][0]["body"], "Confirmed on 1.2.0.");

    // gh JSON: the repository comes from the URL, labels and comment authors are kept.
    let o = t.run(&["memory", "show", "acme/widgets#11", "--json"]);
    assert_eq!(json(&o)["issue"]["comments"][0]["author"], "ann");
    // Markdown without front matter: title from the heading, number from the name.
    let o = t.run(&["memory", "show", "#3", "--json"]);
    assert_eq!(
        json(&o)["issue"]["title"],
        "How do I configure the cache directory?"
    );

    let o = t.run(&["memory", "list", "--label", "bug", "--json"]);
    let refs: Vec<String> = json(&o)["issues"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["ref"].as_str().unwrap().to_string())
        .collect();
    // issues/1.md, issues.json #10 and the CSV's first row (rows without numbers live
    // under local/<file stem>) carry `bug`.
    assert_eq!(
        refs,
        vec!["acme/widgets#1", "acme/widgets#10", "local/issues#1"]
    );

    // Importing again updates instead of duplicating.
    let o = import_fixtures(&t);
    assert!(stdout(&o).contains("(0 new, 8 updated)"), "{}", stdout(&o));
    let o = t.run(&["memory", "stats", "--json"]);
    assert_eq!(json(&o)["stats"]["issues"], 8);
}

#[test]
fn json_import_reports_errors_as_lines() {
    let t = TestContext::new();
    let f = data("issues.json");
    let o = t.run(&["--json", "memory", "import", f.to_str().unwrap()]);
    assert_eq!(code(&o), 1);
    let lines: Vec<serde_json::Value> = stdout(&o)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    assert!(
        lines[0]["ref"]
            .as_str()
            .unwrap()
            .ends_with("issues.json record 3")
    );
    assert!(lines[0]["error"].as_str().unwrap().contains("number"));
    assert_eq!(lines[1]["imported"], 2);
    assert_eq!(lines[1]["failed"], 1);
}

#[test]
fn unreadable_sources_fail_with_nothing_written() {
    let t = TestContext::new();
    let good = data("issues");
    for (bad, needle) in [
        (data("bad/broken.md"), "broken.md:"),
        (data("bad/notjson.json"), "not a JSON array"),
        (t.path().join("missing.csv"), "no such file"),
    ] {
        let o = t.run(&[
            "memory",
            "import",
            good.to_str().unwrap(),
            bad.to_str().unwrap(),
        ]);
        assert_eq!(code(&o), 2, "{bad:?}");
        assert!(stderr(&o).contains(needle), "{bad:?}: {}", stderr(&o));
        assert!(!t.memory_path().exists(), "nothing written for {bad:?}");
    }
    let o = t.run(&["memory", "import", "acme/widgets#3"]);
    assert_eq!(code(&o), 2);
}

#[test]
fn csv_columns_come_from_config() {
    let t = TestContext::new();
    t.write(
        "bugs.csv",
        "Issue id,Summary,Description,Priority\n101,Disk full,HDFS fills the disk,Major\n",
    );
    let o = t.run(&["memory", "import", "bugs.csv"]);
    assert_eq!(code(&o), 2);
    assert!(stderr(&o).contains("no column \"title\""), "{}", stderr(&o));
    assert!(stderr(&o).contains("sources.csv.title"), "{}", stderr(&o));
    t.write("autotriage.yaml", "repo: apache/hadoop\nsources:\n  csv:\n    title: Summary\n    body: Description\n    number: Issue id\n    label: Priority\n");
    let o = t.run(&["memory", "import", "bugs.csv#1"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let o = t.run(&["memory", "show", "apache/hadoop#101", "--json"]);
    assert_eq!(json(&o)["issue"]["labels"], serde_json::json!(["Major"]));
}

#[test]
fn export_then_import_into_empty_memory_loses_nothing() {
    let t = TestContext::new();
    t.write("autotriage.yaml", "repo: acme/widgets\n");
    import_fixtures(&t);
    // Triage results, runs and the stored model are exported too.
    let examples = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/issues");
    assert_eq!(
        code(&t.run(&["memory", "import", examples.to_str().unwrap()])),
        0
    );
    assert_eq!(code(&t.run(&["triage", "acme/widgets#23"])), 0);
    let first = t.run(&["memory", "export", "--jsonl"]);
    assert_eq!(code(&first), 0);
    let dump = t.write("dump.jsonl", &stdout(&first));
    let o = t.run(&[
        "memory",
        "import",
        dump.to_str().unwrap(),
        "--memory",
        "other.sqlite3",
    ]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let second = t.run(&["memory", "export", "--memory", "other.sqlite3"]);
    assert_eq!(stdout(&first), stdout(&second));
    let kinds: Vec<String> = stdout(&first)
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["type"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    let count = |k: &str| kinds.iter().filter(|x| *x == k).count();
    assert_eq!(
        (
            count("header"),
            count("issue"),
            count("triage"),
            count("run"),
            count("kv")
        ),
        (1, 8 + 28 - 5, 1, 1, 1),
        "{kinds:?}"
    );
}

#[test]
fn a_corrupt_memory_file_is_refused_untouched() {
    let t = TestContext::new();
    let path = t.write(
        "mem.sqlite3",
        "this is not a database at all, just text that is long enough",
    );
    let before = std::fs::read(&path).unwrap();
    let o = t.run(&[
        "memory",
        "import",
        data("issues").to_str().unwrap(),
        "--memory",
        "mem.sqlite3",
    ]);
    assert_eq!(code(&o), 2);
    assert!(
        stderr(&o).contains("not a readable autotriage memory"),
        "{}",
        stderr(&o)
    );
    assert_eq!(std::fs::read(&path).unwrap(), before);

    // A SQLite file that is someone else's.
    let other = t.path().join("other.sqlite3");
    rusqlite::Connection::open(&other)
        .unwrap()
        .execute_batch("CREATE TABLE t(x);")
        .unwrap();
    let o = t.run(&["memory", "stats", "--memory", "other.sqlite3"]);
    assert_eq!(code(&o), 2);
    assert!(
        stderr(&o).contains("not one autotriage wrote"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn a_newer_schema_is_refused() {
    let t = TestContext::new();
    let o = t.run(&["memory", "import", data("issues").to_str().unwrap()]);
    assert_eq!(code(&o), 0);
    rusqlite::Connection::open(t.memory_path())
        .unwrap()
        .pragma_update(None, "user_version", 99)
        .unwrap();
    let o = t.run(&["memory", "stats"]);
    assert_eq!(code(&o), 2);
    assert!(
        stderr(&o).contains("schema version 99, newer than this autotriage understands (4)"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn a_locked_memory_is_waited_on_then_reported() {
    let t = TestContext::new();
    assert_eq!(
        code(&t.run(&["memory", "import", data("issues").to_str().unwrap()])),
        0
    );
    // Held for a second: the import waits for it and succeeds.
    let path = t.memory_path();
    let holder = std::thread::spawn(move || {
        let conn = rusqlite::Connection::open(path).unwrap();
        conn.execute_batch("BEGIN IMMEDIATE; DELETE FROM kv;")
            .unwrap();
        std::thread::sleep(Duration::from_millis(1000));
        conn.execute_batch("ROLLBACK").unwrap();
    });
    std::thread::sleep(Duration::from_millis(200));
    let start = Instant::now();
    let o = t.run(&["memory", "import", data("issues.csv").to_str().unwrap()]);
    assert!(
        start.elapsed() >= Duration::from_millis(600),
        "it waited for the lock"
    );
    assert_eq!(
        code(&o),
        1,
        "one bad CSV row, the rest imported: {}",
        stderr(&o)
    );
    assert!(stdout(&o).contains("imported 3 issues"), "{}", stdout(&o));
    holder.join().unwrap();

    // Held for longer than the wait: reported, nothing written.
    let conn = rusqlite::Connection::open(t.memory_path()).unwrap();
    conn.execute_batch("BEGIN IMMEDIATE; DELETE FROM kv;")
        .unwrap();
    let start = Instant::now();
    let o = t.run(&["memory", "forget", "local/issues#1"]);
    assert!(start.elapsed() >= Duration::from_millis(2900));
    assert_eq!(code(&o), 1);
    assert!(
        stderr(&o).contains("is locked by another process (waited 3000 ms)"),
        "{}",
        stderr(&o)
    );
    conn.execute_batch("ROLLBACK").unwrap();
    let o = t.run(&["memory", "stats", "--json"]);
    assert_eq!(json(&o)["stats"]["issues"], 6);
}

#[test]
fn a_memory_from_schema_1_is_migrated() {
    let t = TestContext::new();
    assert_eq!(
        code(&t.run(&["memory", "import", data("issues").to_str().unwrap()])),
        0
    );
    let conn = rusqlite::Connection::open(t.memory_path()).unwrap();
    conn.execute_batch(
        "ALTER TABLE issues DROP COLUMN reactions; DROP TABLE fixes; PRAGMA user_version = 1;",
    )
    .unwrap();
    drop(conn);
    let o = t.run(&["memory", "stats", "--json"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(json(&o)["stats"]["schema_version"], 4);
    assert_eq!(json(&o)["stats"]["issues"], 3);
}

#[test]
fn ctrl_c_during_an_import_leaves_memory_consistent() {
    let t = TestContext::new();
    assert_eq!(
        code(&t.run(&["memory", "import", data("issues").to_str().unwrap()])),
        0
    );
    let mut csv = String::from("title,body,label\n");
    for i in 0..300_000 {
        csv.push_str(&format!(
            "Issue number {i},Some body text about widgets number {i} and more,bug\n"
        ));
    }
    t.write("big.csv", &csv);
    let bin = assert_cmd::cargo::cargo_bin("autotriage");
    let child = std::process::Command::new(bin)
        .current_dir(t.path())
        .env("HOME", t.home.path())
        .args(["memory", "import", "big.csv"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(400));
    let status = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let start = Instant::now();
    let out = child.wait_with_output().unwrap();
    assert!(start.elapsed() < Duration::from_secs(30));
    assert_eq!(
        out.status.code(),
        Some(130),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("interrupted"));
    // Nothing of the interrupted import landed, and the file is intact.
    let conn = rusqlite::Connection::open(t.memory_path()).unwrap();
    let ok: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(ok, "ok");
    let n: i64 = conn
        .query_row("SELECT count(*) FROM issues", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 3);
}

#[test]
fn search_ranks_and_forget_removes() {
    let t = TestContext::new();
    t.write("autotriage.yaml", "repo: acme/widgets\n");
    import_fixtures(&t);
    let o = t.run(&["memory", "search", "crash", "config", "--json"]);
    let results = json(&o)["results"].as_array().unwrap().clone();
    assert_eq!(results[0]["ref"], "acme/widgets#1");
    let s = results[0]["score"].as_f64().unwrap();
    assert!(s > 0.0 && s < 1.0);
    let o = t.run(&["memory", "forget", "acme/widgets#1"]);
    assert_eq!(code(&o), 0);
    assert!(stdout(&o).contains("forgot acme/widgets#1"));
    let o = t.run(&["memory", "show", "acme/widgets#1"]);
    assert_eq!(code(&o), 2);
    assert!(stderr(&o).contains("not in memory"));
}
