//! Reading issues from GitHub through the real binary, against a fake GitHub REST
//! server whose bodies are the recorded real shapes in `tests/data/github/` (from
//! octokit/fixtures, `paginate-issues`).

use serde_json::{Value, json};
use wiremock::matchers::{header, method, path, query_param};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::suite::common::*;

pub const TOKEN: &str = "ghp_faketoken0000000000000000000000000001";

type FakeGithub = HttpMock;

/// A recorded issue, renumbered and retitled.
pub fn issue(number: u64, title: &str, body: &str, labels: &[&str], pr: bool) -> Value {
    let mut v: Value =
        serde_json::from_str(&std::fs::read_to_string(data("github/issue.json")).unwrap()).unwrap();
    v["number"] = json!(number);
    v["title"] = json!(title);
    v["body"] = json!(body);
    v["labels"] = json!(labels.iter().map(|l| json!({"id": 1, "name": l, "color": "d73a4a", "default": true, "description": null})).collect::<Vec<_>>());
    v["html_url"] = json!(format!("https://github.com/o/r/issues/{number}"));
    if pr {
        v["pull_request"] = json!({"url": "https://api.github.com/repos/o/r/pulls/1"});
    }
    v
}

fn comment(body: &str) -> Value {
    json!({"id": 1, "user": {"login": "octokit-fixture-user-a", "id": 1000}, "author_association": "MEMBER", "body": body, "created_at": "2017-10-10T16:00:00Z"})
}

/// The login the tests' token acts as.
pub const BOT: &str = "autotriage-bot";

pub fn ctx_with(server: &MockServer) -> (TestContext, Vec<(&'static str, String)>) {
    // Who the token is (`GET /user`): our comments are the ones this login wrote.
    server_mount_user(server);
    let t = TestContext::new();
    (
        t,
        vec![
            ("GITHUB_TOKEN", TOKEN.to_string()),
            ("GITHUB_API_URL", server.uri()),
        ],
    )
}

fn server_mount_user(server: &MockServer) {
    let mock = Mock::given(method("GET"))
        .and(path("/user"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"login": BOT, "id": 1})));
    std::thread::scope(|s| {
        s.spawn(|| {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(mock.mount(server))
        });
    });
}

#[test]
fn an_issue_is_read_with_all_its_comments_through_retries() {
    let gh = FakeGithub::start();
    let path_issue = "/repos/o/r/issues/7";
    // A 502 first, then the issue.
    gh.mount(
        Mock::given(method("GET"))
            .and(path(path_issue))
            .respond_with(ResponseTemplate::new(502))
            .up_to_n_times(1)
            .with_priority(1),
    );
    gh.mount(
        Mock::given(method("GET"))
            .and(path(path_issue))
            .and(header("authorization", format!("Bearer {TOKEN}").as_str()))
            .respond_with(ResponseTemplate::new(200).set_body_json(issue(
                7,
                "Crash when saving",
                "It panics on save.",
                &["bug"],
                false,
            )))
            .with_priority(2),
    );
    // Comments: a 429 with Retry-After, then two pages joined by a Link header.
    let comments = "/repos/o/r/issues/7/comments";
    gh.mount(
        Mock::given(method("GET"))
            .and(path(comments))
            .respond_with(ResponseTemplate::new(429).insert_header("retry-after", "0"))
            .up_to_n_times(1)
            .with_priority(1),
    );
    gh.mount(
        Mock::given(method("GET"))
            .and(path(comments))
            .and(query_param("page", "2"))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!([comment("second page")])))
            .with_priority(2),
    );
    gh.mount(
        Mock::given(method("GET"))
            .and(path(comments))
            .respond_with(
                ResponseTemplate::new(200)
                    .insert_header("link", format!("<{}{comments}?per_page=100&page=2>; rel=\"next\", <{}{comments}?per_page=100&page=2>; rel=\"last\"", gh.server.uri(), gh.server.uri()).as_str())
                    .set_body_json(json!([comment("first page")])),
            )
            .with_priority(3),
    );
    let (t, env) = ctx_with(&gh.server);
    let mut cmd = t.cmd();
    for (k, v) in &env {
        cmd.env(k, v);
    }
    let o = cmd.args(["triage", "o/r#7", "--json"]).output().unwrap();
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let v = json(&o);
    assert_eq!(v["ref"], "o/r#7");
    assert_eq!(v["title"], "Crash when saving");
    assert!(
        stderr(&o).contains("waiting"),
        "waits are reported: {}",
        stderr(&o)
    );
    let run = t
        .path()
        .join(".autotriage/runs")
        .join(v["run_id"].as_str().unwrap());
    let stored: Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("issue.json")).unwrap()).unwrap();
    assert_eq!(stored["labels"], json!(["bug"]));
    assert_eq!(stored["author_association"], "MEMBER");
    let bodies: Vec<&str> = stored["comments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["body"].as_str().unwrap())
        .collect();
    assert_eq!(bodies, vec!["first page", "second page"]);
    // The token went to GitHub as the token, and nowhere else.
    assert!(!stdout(&o).contains(TOKEN) && !stderr(&o).contains(TOKEN));
    for (p, bytes) in crate::suite::redaction::all_files(&t.path().join(".autotriage")) {
        assert!(!String::from_utf8_lossy(&bytes).contains(TOKEN), "{p:?}");
    }
    // Stored in memory: a second triage reads memory, with no request.
    let before = gh.requests().len();
    let mut cmd = t.cmd();
    for (k, v) in &env {
        cmd.env(k, v);
    }
    assert_eq!(code(&cmd.args(["triage", "o/r#7"]).output().unwrap()), 0);
    assert_eq!(gh.requests().len(), before);
}

#[test]
fn a_repository_batch_follows_pages_and_skips_pull_requests() {
    let gh = FakeGithub::start();
    let list = "/repos/o/r/issues";
    // Page 2 is rate limited once: the batch waits and finishes.
    gh.mount(
        Mock::given(method("GET"))
            .and(path(list))
            .and(query_param("page", "2"))
            .respond_with(ResponseTemplate::new(429).insert_header("retry-after", "0"))
            .up_to_n_times(1)
            .with_priority(1),
    );
    gh.mount(
        Mock::given(method("GET"))
            .and(path(list))
            .and(query_param("page", "2"))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!([issue(
                3,
                "Third",
                "c",
                &[],
                false
            )])))
            .with_priority(1),
    );
    gh.mount(
        Mock::given(method("GET"))
            .and(path(list))
            .and(query_param("state", "open"))
            .respond_with(
                ResponseTemplate::new(200)
                    .insert_header(
                        "link",
                        format!(
                            "<{}{list}?state=open&per_page=100&page=2>; rel=\"next\"",
                            gh.server.uri()
                        )
                        .as_str(),
                    )
                    .set_body_json(json!([
                        issue(1, "First", "a", &[], false),
                        issue(2, "A pull request", "b", &[], true),
                        issue(4, "Fourth", "d", &[], false)
                    ])),
            )
            .with_priority(2),
    );
    let (t, env) = ctx_with(&gh.server);
    let mut cmd = t.cmd();
    for (k, v) in &env {
        cmd.env(k, v);
    }
    let o = cmd.args(["triage", "o/r", "--json"]).output().unwrap();
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let refs: Vec<String> = stdout(&o)
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["ref"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(refs, vec!["o/r#1", "o/r#4", "o/r#3"]);
    let mut cmd = t.cmd();
    for (k, v) in &env {
        cmd.env(k, v);
    }
    let o = cmd
        .args([
            "triage", "o/r", "--from", "github", "--limit", "1", "--json",
        ])
        .output()
        .unwrap();
    assert_eq!(stdout(&o).lines().count(), 1);
}

#[test]
fn github_errors_are_explained() {
    let gh = FakeGithub::start();
    gh.mount(
        Mock::given(method("GET"))
            .and(path("/repos/o/r/issues/9"))
            .respond_with(
                ResponseTemplate::new(403)
                    .insert_header("x-accepted-oauth-scopes", "repo")
                    .set_body_json(
                        json!({"message": "Resource not accessible by personal access token"}),
                    ),
            ),
    );
    gh.mount(Mock::given(method("GET")).and(path("/repos/o/r/issues/404")).respond_with(ResponseTemplate::new(404).set_body_json(json!({"message": "Not Found", "documentation_url": "https://docs.github.com/rest"}))));
    gh.mount(
        Mock::given(method("GET"))
            .and(path("/repos/o/r/issues/5"))
            .respond_with(ResponseTemplate::new(200).set_body_json(issue(
                5,
                "A PR",
                "",
                &[],
                true,
            ))),
    );
    gh.mount(
        Mock::given(method("GET"))
            .and(path("/repos/o/r/issues/6"))
            .respond_with(
                ResponseTemplate::new(401).set_body_json(json!({"message": "Bad credentials"})),
            ),
    );
    let (t, env) = ctx_with(&gh.server);
    for (r, needle) in [
        ("o/r#404", "the repository or issue does not exist"),
        ("o/r#5", "this is a pull request"),
        ("o/r#6", "the token was refused"),
        ("o/r#9", "the token lacks a scope"),
    ] {
        let mut cmd = t.cmd();
        for (k, v) in &env {
            cmd.env(k, v);
        }
        let o = cmd.args(["triage", r]).output().unwrap();
        assert_eq!(code(&o), 2, "{r}");
        assert!(stderr(&o).contains(needle), "{r}: {}", stderr(&o));
    }
    // No token at all.
    let o = t
        .cmd()
        .env("GITHUB_API_URL", gh.server.uri())
        .env("PATH", "/nonexistent")
        .args(["triage", "o/r#7", "--from", "github"])
        .output()
        .unwrap();
    assert_eq!(code(&o), 2);
    assert!(stderr(&o).contains("no GitHub token"), "{}", stderr(&o));
}

/// A stateful slice of GitHub: one issue's labels and comments.
#[derive(Default)]
struct IssueState {
    labels: Vec<String>,
    pub comments: Vec<Value>,
    label_posts: u32,
    comment_posts: u32,
    comment_patches: u32,
}

type Shared = std::sync::Arc<std::sync::Mutex<IssueState>>;

struct GetIssue(Shared, Value);
impl wiremock::Respond for GetIssue {
    fn respond(&self, _: &wiremock::Request) -> ResponseTemplate {
        let s = self.0.lock().unwrap();
        let mut v = self.1.clone();
        v["labels"] = json!(
            s.labels
                .iter()
                .map(|l| json!({"name": l}))
                .collect::<Vec<_>>()
        );
        ResponseTemplate::new(200).set_body_json(v)
    }
}

struct AddLabels(Shared);
impl wiremock::Respond for AddLabels {
    fn respond(&self, r: &wiremock::Request) -> ResponseTemplate {
        let mut s = self.0.lock().unwrap();
        s.label_posts += 1;
        let body: Value = serde_json::from_slice(&r.body).unwrap();
        for l in body["labels"].as_array().unwrap() {
            let l = l.as_str().unwrap().to_string();
            if !s.labels.contains(&l) {
                s.labels.push(l);
            }
        }
        ResponseTemplate::new(200).set_body_json(json!(
            s.labels
                .iter()
                .map(|l| json!({"name": l}))
                .collect::<Vec<_>>()
        ))
    }
}

struct Comments(Shared);
impl wiremock::Respond for Comments {
    fn respond(&self, r: &wiremock::Request) -> ResponseTemplate {
        let mut s = self.0.lock().unwrap();
        match r.method.as_str() {
            "POST" => {
                s.comment_posts += 1;
                let body: Value = serde_json::from_slice(&r.body).unwrap();
                let id = 900 + s.comments.len() as u64;
                let c = json!({"id": id, "body": body["body"], "user": {"login": "autotriage-bot"}, "html_url": format!("https://github.com/o/r/issues/7#issuecomment-{id}")});
                s.comments.push(c.clone());
                ResponseTemplate::new(201).set_body_json(c)
            }
            "PATCH" => {
                s.comment_patches += 1;
                let body: Value = serde_json::from_slice(&r.body).unwrap();
                let id: u64 = r.url.path().rsplit('/').next().unwrap().parse().unwrap();
                let c = s.comments.iter_mut().find(|c| c["id"] == id).unwrap();
                c["body"] = body["body"].clone();
                ResponseTemplate::new(200).set_body_json(c.clone())
            }
            _ => ResponseTemplate::new(200).set_body_json(json!(s.comments)),
        }
    }
}

#[test]
fn triage_apply_twice_gives_one_comment_and_the_labels_once() {
    let gh = FakeGithub::start();
    let state: Shared = Default::default();
    state
        .lock()
        .unwrap()
        .comments
        .push(comment("I see this too."));
    let raw = issue(
        7,
        "Images missing from output after upgrade",
        "Since upgrading, images from `static/` are not copied to `dist/` anymore.",
        &[],
        false,
    );
    gh.mount(
        Mock::given(method("GET"))
            .and(path("/repos/o/r/issues/7"))
            .respond_with(GetIssue(state.clone(), raw)),
    );
    gh.mount(
        Mock::given(method("POST"))
            .and(path("/repos/o/r/issues/7/labels"))
            .respond_with(AddLabels(state.clone())),
    );
    gh.mount(
        Mock::given(path("/repos/o/r/issues/7/comments")).respond_with(Comments(state.clone())),
    );
    gh.mount(
        Mock::given(method("PATCH"))
            .and(wiremock::matchers::path_regex(
                r"^/repos/o/r/issues/comments/\d+$",
            ))
            .respond_with(Comments(state.clone())),
    );
    gh.mount(
        Mock::given(method("GET"))
            .and(path("/repos/o/r/labels"))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!([{"name": "bug", "description": null}, {"name": "enhancement", "description": null}]))),
    );
    let (t, env) = ctx_with(&gh.server);
    // History, so the kind (and the repository's `bug` label) is known.
    let ex = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/issues");
    let mut hist = String::new();
    for e in std::fs::read_dir(&ex).unwrap() {
        let p = e.unwrap().path();
        let text = std::fs::read_to_string(&p)
            .unwrap()
            .replace("repo: acme/widgets", "repo: o/r");
        let name = p.file_name().unwrap().to_str().unwrap().to_string();
        if !name.starts_with("02") || name.as_str() < "023" {
            t.write(&format!("hist/{name}"), &text);
            hist.push_str(&name);
        }
    }
    assert_eq!(code(&t.run(&["memory", "import", "hist"])), 0);
    let run = |args: &[&str]| {
        let mut cmd = t.cmd();
        for (k, v) in &env {
            cmd.env(k, v);
        }
        cmd.args(args).output().unwrap()
    };
    // --dry-run writes nothing.
    let o = run(&[
        "triage",
        "o/r#7",
        "--from",
        "github",
        "--apply",
        "--dry-run",
        "--json",
    ]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let v = json(&o);
    assert_eq!(v["kind"], "bug", "{v}");
    assert_eq!(v["applied"]["dry_run"], true);
    assert_eq!(v["applied"]["labels_added"], json!(["bug"]));
    assert_eq!(v["applied"]["comment"], "created");
    {
        let s = state.lock().unwrap();
        assert_eq!(
            (s.label_posts, s.comment_posts, s.comment_patches),
            (0, 0, 0)
        );
    }
    let before = gh.requests().len();
    let o = run(&["triage", "o/r#7", "--from", "github", "--apply", "--json"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let v = json(&o);
    assert_eq!(v["applied"]["comment"], "created");
    // API calls: read issue + comments, the repository's labels, then who we are,
    // check issue, the labels the repository has, add labels, check comments, create
    // the comment.
    assert_eq!(gh.requests().len() - before, 9);
    assert_eq!(
        v["applied"]["comment_url"],
        "https://github.com/o/r/issues/7#issuecomment-901"
    );
    let before = gh.requests().len();
    let o = run(&["triage", "o/r#7", "--from", "github", "--apply", "--json"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(gh.requests().len() - before, 6, "a re-run only reads");
    let v = json(&o);
    assert_eq!(v["applied"]["labels_added"], json!([]));
    assert_eq!(v["applied"]["comment"], "unchanged");
    let s = state.lock().unwrap();
    assert_eq!(s.labels, vec!["bug"]);
    assert_eq!(
        (s.label_posts, s.comment_posts, s.comment_patches),
        (1, 1, 0)
    );
    let bot: Vec<&Value> = s
        .comments
        .iter()
        .filter(|c| {
            c["body"]
                .as_str()
                .unwrap()
                .contains("<!-- autotriage:triage -->")
        })
        .collect();
    assert_eq!(bot.len(), 1, "one bot comment");
    assert!(
        bot[0]["body"]
            .as_str()
            .unwrap()
            .contains("Steps to reproduce")
    );
    drop(s);

    // A local issue cannot be applied to GitHub.
    t.write("l/1.md", "---\ntitle: x\n---\ny\n");
    let o = run(&["triage", "l/1.md", "--apply"]);
    assert_eq!(code(&o), 2);
    assert!(stderr(&o).contains("is a local issue"), "{}", stderr(&o));
}

#[test]
fn the_trigger_label_counts_only_when_someone_with_write_access_added_it() {
    let gh = FakeGithub::start();
    for (n, actor, permission) in [(8u64, "drive-by", "read"), (9, "maint", "write")] {
        let mut v = issue(n, "Crash on save", "It panics.", &["autotriage:fix"], false);
        v["author_association"] = json!("NONE");
        gh.mount(
            Mock::given(method("GET"))
                .and(path(format!("/repos/o/r/issues/{n}")))
                .respond_with(ResponseTemplate::new(200).set_body_json(v)),
        );
        gh.mount(
            Mock::given(method("GET"))
                .and(path(format!("/repos/o/r/issues/{n}/comments")))
                .respond_with(ResponseTemplate::new(200).set_body_json(json!([]))),
        );
        gh.mount(
            Mock::given(method("GET")).and(path(format!("/repos/o/r/issues/{n}/events"))).respond_with(ResponseTemplate::new(200).set_body_json(json!([
                {"id": 1, "event": "labeled", "actor": {"login": actor}, "label": {"name": "autotriage:fix", "color": "ededed"}, "created_at": "2017-10-10T16:00:00Z"}
            ]))),
        );
        gh.mount(
            Mock::given(method("GET"))
                .and(path(format!("/repos/o/r/collaborators/{actor}/permission")))
                .respond_with(
                    ResponseTemplate::new(200)
                        .set_body_json(json!({"permission": permission, "user": {"login": actor}})),
                ),
        );
    }
    let (t, env) = ctx_with(&gh.server);
    let reasons = |n: u64| {
        let mut cmd = t.cmd();
        for (k, v) in &env {
            cmd.env(k, v);
        }
        let o = cmd
            .args(["triage", &format!("o/r#{n}"), "--json"])
            .output()
            .unwrap();
        assert_eq!(code(&o), 0, "{}", stderr(&o));
        serde_json::to_string(&json(&o)["reasons"]).unwrap()
    };
    assert!(reasons(8).contains("added by drive-by, who lacks write access"));
    assert!(reasons(9).contains("added by maint, who can write"));
}

#[test]
fn primary_and_secondary_rate_limits_are_waited_out() {
    let gh = FakeGithub::start();
    let p = "/repos/o/r/issues/3";
    // A secondary limit (403 with Retry-After), then a primary one (remaining 0, reset
    // already past), then the issue.
    gh.mount(
        Mock::given(method("GET"))
            .and(path(p))
            .respond_with(
                ResponseTemplate::new(403)
                    .insert_header("retry-after", "0")
                    .set_body_json(json!({"message": "You have exceeded a secondary rate limit."})),
            )
            .up_to_n_times(1)
            .with_priority(1),
    );
    gh.mount(
        Mock::given(method("GET"))
            .and(path(p))
            .respond_with(
                ResponseTemplate::new(403)
                    .insert_header("x-ratelimit-remaining", "0")
                    .insert_header("x-ratelimit-reset", "1507651200")
                    .set_body_json(json!({"message": "API rate limit exceeded"})),
            )
            .up_to_n_times(1)
            .with_priority(2),
    );
    gh.mount(
        Mock::given(method("GET"))
            .and(path(p))
            .respond_with(ResponseTemplate::new(200).set_body_json(issue(
                3,
                "Third",
                "c",
                &[],
                false,
            )))
            .with_priority(3),
    );
    gh.mount(
        Mock::given(method("GET"))
            .and(path(format!("{p}/comments")))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!([]))),
    );
    let (t, env) = ctx_with(&gh.server);
    let mut cmd = t.cmd();
    for (k, v) in &env {
        cmd.env(k, v);
    }
    let o = cmd.args(["triage", "o/r#3", "--json"]).output().unwrap();
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let err = stderr(&o);
    assert_eq!(
        err.matches("GitHub rate limit (HTTP 403): waiting").count(),
        2,
        "{err}"
    );
    assert_eq!(json(&o)["title"], "Third");
}

#[test]
fn apply_skips_closed_or_locked_issues_unless_forced() {
    let gh = FakeGithub::start();
    let mut closed = issue(11, "Old crash", "It panicked once.", &[], false);
    closed["state"] = json!("closed");
    let mut locked = issue(12, "Heated crash", "It panicked.", &[], false);
    locked["locked"] = json!(true);
    for (n, v) in [(11, closed), (12, locked)] {
        gh.mount(
            Mock::given(method("GET"))
                .and(path(format!("/repos/o/r/issues/{n}")))
                .respond_with(ResponseTemplate::new(200).set_body_json(v)),
        );
        gh.mount(
            Mock::given(method("GET"))
                .and(path(format!("/repos/o/r/issues/{n}/comments")))
                .respond_with(ResponseTemplate::new(200).set_body_json(json!([]))),
        );
        gh.mount(
            Mock::given(method("POST"))
                .and(path(format!("/repos/o/r/issues/{n}/comments")))
                .respond_with(ResponseTemplate::new(201).set_body_json(
                    json!({"id": 1, "html_url": "https://github.com/o/r/issues/1#c"}),
                )),
        );
    }
    let (t, env) = ctx_with(&gh.server);
    let run = |args: &[&str]| {
        let mut cmd = t.cmd();
        for (k, v) in &env {
            cmd.env(k, v);
        }
        cmd.args(args).output().unwrap()
    };
    for (r, why) in [
        ("o/r#11", "the issue is closed"),
        ("o/r#12", "the issue is locked"),
    ] {
        let o = run(&["triage", r, "--apply", "--json"]);
        assert_eq!(code(&o), 0, "{}", stderr(&o));
        assert!(
            json(&o)["applied"]["skipped"]
                .as_str()
                .unwrap()
                .starts_with(why),
            "{r}"
        );
    }
    let posts = || {
        gh.requests()
            .iter()
            .filter(|r| r.method.as_str() == "POST")
            .count()
    };
    assert_eq!(posts(), 0);
    // Without a trained model the triage abstains and has nothing to say, so even
    // --force writes no comment; it does get past the skip.
    let o = run(&["triage", "o/r#11", "--apply", "--force", "--json"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(json(&o)["applied"]["skipped"], Value::Null);
}

/// A stateful fake of the repository endpoints `pr` uses: contents, the git data API
/// (blobs, trees, commits, refs), pulls and issue comments. Shas are content hashes,
/// as on GitHub, so the same change gives the same tree.
#[derive(Default)]
pub struct RepoState {
    pub files: std::collections::BTreeMap<String, String>,
    pub blobs: std::collections::BTreeMap<String, String>,
    pub trees: std::collections::BTreeMap<String, std::collections::BTreeMap<String, String>>,
    pub commits: std::collections::BTreeMap<String, (String, String)>,
    pub refs: std::collections::BTreeMap<String, String>,
    pub pulls: Vec<Value>,
    pub comments: Vec<Value>,
    pub writes: Vec<String>,
    pub repo_labels: Vec<String>,
}

pub fn sha(text: &str) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(text.as_bytes())
        .iter()
        .take(20)
        .map(|b| format!("{b:02x}"))
        .collect()
}

pub struct FakeRepo(pub std::sync::Arc<std::sync::Mutex<RepoState>>);

impl wiremock::Respond for FakeRepo {
    fn respond(&self, r: &wiremock::Request) -> ResponseTemplate {
        let mut s = self.0.lock().unwrap();
        let path = r.url.path().trim_start_matches("/repos/o/r").to_string();
        let body: Value = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
        let method = r.method.as_str().to_string();
        if method != "GET" {
            s.writes.push(format!("{method} {path}"));
        }
        let ok = |v: Value| ResponseTemplate::new(200).set_body_json(v);
        let not_found =
            || ResponseTemplate::new(404).set_body_json(json!({"message": "Not Found"}));
        match (method.as_str(), path.as_str()) {
            ("GET", "") => ok(json!({"full_name": "o/r", "default_branch": "main"})),
            ("GET", p) if p.starts_with("/git/ref/heads/") => {
                match s.refs.get(&p["/git/ref/heads/".len()..]) {
                    Some(sha) => ok(json!({"ref": p, "object": {"sha": sha, "type": "commit"}})),
                    None => not_found(),
                }
            }
            ("GET", p) if p.starts_with("/git/commits/") => {
                match s.commits.get(&p["/git/commits/".len()..]) {
                    Some((tree, parent)) => ok(
                        json!({"sha": &p["/git/commits/".len()..], "tree": {"sha": tree}, "parents": if parent.is_empty() { json!([]) } else { json!([{"sha": parent}]) }}),
                    ),
                    None => not_found(),
                }
            }
            ("GET", p) if p.starts_with("/contents/") => {
                match s.files.get(&p["/contents/".len()..]) {
                    Some(c) => {
                        use base64::Engine as _;
                        ok(
                            json!({"type": "file", "encoding": "base64", "content": base64::engine::general_purpose::STANDARD.encode(c)}),
                        )
                    }
                    None => not_found(),
                }
            }
            ("POST", "/git/blobs") => {
                use base64::Engine as _;
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(body["content"].as_str().unwrap())
                    .unwrap();
                let content = String::from_utf8(bytes).unwrap();
                let id = sha(&format!("blob {content}"));
                s.blobs.insert(id.clone(), content);
                ResponseTemplate::new(201).set_body_json(json!({"sha": id}))
            }
            ("POST", "/git/trees") => {
                let mut entries = s
                    .trees
                    .get(body["base_tree"].as_str().unwrap())
                    .cloned()
                    .unwrap_or_default();
                for item in body["tree"].as_array().unwrap() {
                    let p = item["path"].as_str().unwrap().to_string();
                    match item["sha"].as_str() {
                        Some(b) => entries.insert(p, b.to_string()),
                        None => entries.remove(&p),
                    };
                }
                let id = sha(&format!("tree {entries:?}"));
                s.trees.insert(id.clone(), entries);
                ResponseTemplate::new(201).set_body_json(json!({"sha": id}))
            }
            ("POST", "/git/commits") => {
                let tree = body["tree"].as_str().unwrap().to_string();
                let parent = body["parents"][0].as_str().unwrap_or("").to_string();
                let id = sha(&format!("commit {tree} {parent} {}", s.commits.len()));
                s.commits.insert(id.clone(), (tree, parent));
                ResponseTemplate::new(201).set_body_json(json!({"sha": id}))
            }
            ("POST", "/git/refs") => {
                let name = body["ref"]
                    .as_str()
                    .unwrap()
                    .trim_start_matches("refs/heads/")
                    .to_string();
                if s.refs.contains_key(&name) {
                    return ResponseTemplate::new(422)
                        .set_body_json(json!({"message": "Reference already exists"}));
                }
                s.refs
                    .insert(name, body["sha"].as_str().unwrap().to_string());
                ResponseTemplate::new(201).set_body_json(json!({}))
            }
            ("PATCH", p) if p.starts_with("/git/refs/heads/") => {
                s.refs.insert(
                    p["/git/refs/heads/".len()..].to_string(),
                    body["sha"].as_str().unwrap().to_string(),
                );
                ok(json!({}))
            }
            ("GET", "/pulls") => {
                let head = r
                    .url
                    .query_pairs()
                    .find(|(k, _)| k == "head")
                    .map(|(_, v)| v.to_string())
                    .unwrap_or_default();
                let branch = head
                    .split_once(':')
                    .map(|(_, b)| b.to_string())
                    .unwrap_or(head);
                ok(json!(
                    s.pulls
                        .iter()
                        .filter(|p| p["head"]["ref"] == branch.as_str())
                        .cloned()
                        .collect::<Vec<_>>()
                ))
            }
            ("POST", "/pulls") => {
                let n = 100 + s.pulls.len() as u64;
                let pr = json!({"number": n, "user": {"login": BOT}, "html_url": format!("https://github.com/o/r/pull/{n}"), "draft": body["draft"], "title": body["title"], "body": body["body"], "head": {"ref": body["head"]}, "base": {"ref": body["base"]}});
                s.pulls.push(pr.clone());
                ResponseTemplate::new(201).set_body_json(pr)
            }
            ("PATCH", p) if p.starts_with("/pulls/") => {
                let n: u64 = p["/pulls/".len()..].parse().unwrap();
                let pr = s.pulls.iter_mut().find(|x| x["number"] == n).unwrap();
                pr["body"] = body["body"].clone();
                pr["title"] = body["title"].clone();
                ok(pr.clone())
            }
            ("GET", "/labels") => ok(json!(
                s.repo_labels
                    .iter()
                    .map(|l| json!({"name": l}))
                    .collect::<Vec<_>>()
            )),
            ("GET", p) if p.starts_with("/labels/") => {
                if s.repo_labels.iter().any(|l| l == &p["/labels/".len()..]) {
                    ok(json!({"name": &p["/labels/".len()..]}))
                } else {
                    not_found()
                }
            }
            ("POST", p) if p.starts_with("/issues/1") && p.ends_with("/labels") => {
                let n: u64 = p
                    .trim_start_matches("/issues/")
                    .trim_end_matches("/labels")
                    .parse()
                    .unwrap();
                let pr = s.pulls.iter_mut().find(|x| x["number"] == n).unwrap();
                let mut have: Vec<Value> = pr["labels"].as_array().cloned().unwrap_or_default();
                for l in body["labels"].as_array().unwrap() {
                    have.push(json!({"name": l}));
                }
                pr["labels"] = json!(have);
                ok(json!(have))
            }
            ("GET", "/issues/3/comments") => ok(json!(s.comments)),
            ("POST", "/issues/3/comments") => {
                let c = json!({"id": 700 + s.comments.len(), "body": body["body"], "user": {"login": BOT}, "html_url": "https://github.com/o/r/issues/3#issuecomment-700"});
                s.comments.push(c.clone());
                ResponseTemplate::new(201).set_body_json(c)
            }
            ("PATCH", p) if p.starts_with("/issues/comments/") => {
                let id: u64 = p["/issues/comments/".len()..].parse().unwrap();
                let c = s.comments.iter_mut().find(|c| c["id"] == id).unwrap();
                c["body"] = body["body"].clone();
                ok(c.clone())
            }
            _ => not_found(),
        }
    }
}

#[test]
fn pr_on_github_opens_one_draft_pr_and_updates_it_on_a_rerun() {
    let gh = FakeGithub::start();
    let state: std::sync::Arc<std::sync::Mutex<RepoState>> = Default::default();
    {
        let mut s = state.lock().unwrap();
        let base_content = "pub fn add(a: i32, b: i32) -> i32 {\n    a - b\n}\n".to_string();
        s.files.insert("src/lib.rs".into(), base_content.clone());
        let blob = sha(&format!("blob {base_content}"));
        s.blobs.insert(blob.clone(), base_content);
        let tree: std::collections::BTreeMap<String, String> =
            [("src/lib.rs".to_string(), blob)].into_iter().collect();
        s.trees.insert("tree0".into(), tree);
        s.commits
            .insert("base0".into(), ("tree0".into(), String::new()));
        s.refs.insert("main".into(), "base0".into());
        s.repo_labels.push("autotriage".into());
    }
    gh.mount(
        Mock::given(method("GET"))
            .and(path("/repos/o/r/issues/3"))
            .respond_with(ResponseTemplate::new(200).set_body_json(issue(
                3,
                "add() subtracts",
                "`add(2, 2)` returns 0.",
                &["bug"],
                false,
            ))),
    );
    gh.mount(
        Mock::given(wiremock::matchers::path_regex("^/repos/o/r(/.*)?$"))
            .respond_with(FakeRepo(state.clone())),
    );
    let (t, env) = ctx_with(&gh.server);
    t.write("fix.diff", "diff --git a/src/lib.rs b/src/lib.rs\n--- a/src/lib.rs\n+++ b/src/lib.rs\n@@ -1,3 +1,3 @@\n pub fn add(a: i32, b: i32) -> i32 {\n-    a - b\n+    a + b\n }\n");
    t.write(
        "autotriage.yaml",
        "github:\n  pr_labels: [autotriage, needs-review]\n",
    );
    let run = |args: &[&str]| {
        let mut cmd = t.cmd();
        for (k, v) in &env {
            cmd.env(k, v);
        }
        cmd.args(args).output().unwrap()
    };
    let o = run(&[
        "pr",
        "o/r#3",
        "--patch",
        "fix.diff",
        "--forge",
        "github",
        "--dry-run",
        "--json",
    ]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(
        state.lock().unwrap().writes.is_empty(),
        "--dry-run writes nothing"
    );

    let o = run(&[
        "pr", "o/r#3", "--patch", "fix.diff", "--forge", "github", "--json",
    ]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let v = json(&o);
    assert_eq!(v["github"]["pr_status"], "created");
    assert_eq!(v["github"]["url"], "https://github.com/o/r/pull/100");
    assert_eq!(v["github"]["published"]["status"], "created");
    assert_eq!(v["github"]["labels_added"], json!(["autotriage"]));
    assert_eq!(
        v["github"]["labels_skipped"],
        json!(["needs-review"]),
        "github.create_labels is off"
    );
    // who we are, repo, base ref, base commit, 1 file, branch ref, blob, tree,
    // commit, ref, open PRs, the PR, the repository's labels, the labels, the
    // comments, the comment.
    assert_eq!(v["github"]["requests"], 16);
    {
        let s = state.lock().unwrap();
        let head = s
            .refs
            .get("autotriage/issue-3")
            .expect("the branch exists")
            .clone();
        let (tree, parent) = s.commits[&head].clone();
        assert_eq!(parent, "base0");
        let blob = &s.trees[&tree]["src/lib.rs"];
        assert!(s.blobs[blob].contains("a + b"));
        assert_eq!(s.pulls.len(), 1);
        assert_eq!(s.pulls[0]["draft"], true);
        assert!(s.pulls[0]["body"].as_str().unwrap().contains("Fixes #3"));
        assert_eq!(s.comments.len(), 1);
        assert!(
            s.comments[0]["body"]
                .as_str()
                .unwrap()
                .contains("https://github.com/o/r/pull/100")
        );
    }
    // Again with the same patch: one branch, one PR, one comment.
    let o = run(&[
        "pr", "o/r#3", "--patch", "fix.diff", "--forge", "github", "--json",
    ]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let v = json(&o);
    assert_eq!(v["github"]["published"]["status"], "unchanged");
    assert_eq!(v["github"]["pr_status"], "updated");
    assert_eq!(v["github"]["labels_added"], json!([]));
    // No blob-free short cut yet: the tree is rebuilt to compare, then only reads
    // (one more: whether someone else opened a PR from our branch) and the PR update.
    assert_eq!(v["github"]["requests"], 14);
    assert_eq!(v["github"]["comment"], "unchanged");
    let s = state.lock().unwrap();
    assert_eq!(s.pulls.len(), 1);
    assert_eq!(s.comments.len(), 1);
    assert_eq!(
        s.writes
            .iter()
            .filter(|w| w.starts_with("POST /git/refs"))
            .count(),
        1
    );
    assert_eq!(
        s.writes
            .iter()
            .filter(|w| w.starts_with("POST /git/commits"))
            .count(),
        1
    );
    drop(s);

    // A run that died after the branch and before the PR is finished by the next one.
    state.lock().unwrap().pulls.clear();
    let o = run(&[
        "pr", "o/r#3", "--patch", "fix.diff", "--forge", "github", "--json",
    ]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let v = json(&o);
    assert_eq!(v["github"]["published"]["status"], "unchanged");
    assert_eq!(v["github"]["pr_status"], "created");
    assert_eq!(
        v["github"]["comment"], "unchanged",
        "the fake reuses the number, so the link is still right"
    );
    assert_eq!(state.lock().unwrap().pulls.len(), 1);
}

#[test]
fn the_repositorys_labels_on_github_decide_what_can_be_applied() {
    let gh = FakeGithub::start();
    let v = issue(
        4,
        "Crash when a page has an empty title",
        "thread 'main' panicked at src/page.rs:57:22\n\nSteps to reproduce:\n1. run `widgets build`\n2. see\n\nExpected: it builds. Actual: panic.\n\nwidgets 1.3.0",
        &[],
        false,
    );
    gh.mount(
        Mock::given(method("GET"))
            .and(path("/repos/n/r/issues/4"))
            .respond_with(ResponseTemplate::new(200).set_body_json(v)),
    );
    gh.mount(
        Mock::given(method("GET"))
            .and(path("/repos/n/r/issues/4/comments"))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!([]))),
    );
    gh.mount(
        Mock::given(method("GET"))
            .and(path("/repos/n/r/labels"))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!([{"id": 1, "name": "type: bug", "description": "Something is broken", "color": "d73a4a", "default": false}]))),
    );
    let (t, env) = ctx_with(&gh.server);
    let ex = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/issues");
    assert_eq!(code(&t.run(&["memory", "import", ex.to_str().unwrap()])), 0);
    let mut cmd = t.cmd();
    for (k, val) in &env {
        cmd.env(k, val);
    }
    let o = cmd.args(["triage", "n/r#4", "--json"]).output().unwrap();
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let v = json(&o);
    assert_eq!(v["kind"], "bug", "{v}");
    assert_eq!(
        v["labels"][0]["name"], "type: bug",
        "the repository's own label for bugs: {v}"
    );
}
