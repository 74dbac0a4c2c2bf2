//! A stateful fake of the GitHub REST API that models other users, so tests can show
//! what strangers (and collaborators, and an Action's `GITHUB_TOKEN`) can do to a run.
//!
//! One catch-all wiremock mock answers every request from a [`World`]: tokens (users
//! and App installations), repositories with labels, issues, comments, label events,
//! pull requests and permissions, and a real bare git repository per repository
//! backing the git data API (real SHAs: a test can inspect branches with git2 or clone
//! the repository from [`World::bare_path`]). Every request that is not a GET is
//! appended to [`World::log`], so a test can assert exactly which writes happened.
//!
//! Shapes follow the real API (the issue JSON starts from the recorded
//! `tests/data/github/issue.json`); so do its quirks that matter to a client: label
//! names in paths are percent-decoded (an unencoded `?` starts the query, an unencoded
//! `#` never arrives), labels match case-insensitively, adding a label the repository
//! lacks creates it, a token with write permission may edit anyone's comment, and a
//! ref update that is not a fast forward needs `force`.
//!
//! Anything not modelled answers 404 and is reported on stderr.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Output;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, TryLockError};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{Value, json};
use wiremock::matchers::path_regex;
use wiremock::{Mock, Request, Respond, ResponseTemplate};

use crate::suite::common::*;

// ---------------------------------------------------------------------------------
// The model
// ---------------------------------------------------------------------------------

/// What a token is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenKind {
    /// A user's token (PAT, `gh auth token`): acts as that login.
    User(String),
    /// An App installation token, such as an Action's `GITHUB_TOKEN`: acts as that
    /// login (e.g. `github-actions[bot]`); `GET /user` answers 403. Without an
    /// explicit permission it may write (as a workflow's token usually can).
    Installation(String),
}

impl TokenKind {
    /// The login the token acts as.
    pub fn login(&self) -> &str {
        match self {
            TokenKind::User(l) | TokenKind::Installation(l) => l,
        }
    }
}

/// A repository label.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Label {
    pub name: String,
    pub color: String,
    pub description: Option<String>,
}

/// An issue (or pull request) comment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Comment {
    pub id: u64,
    pub author: String,
    pub author_association: String,
    pub body: String,
    pub created_at: String,
    /// Logins that edited it through the API (PATCH), in order; the author included
    /// when they edited their own.
    pub edited_by: Vec<String>,
}

/// An issue event (only label events are modelled).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// `labeled` or `unlabeled`.
    pub event: String,
    pub label: String,
    pub actor: String,
    pub created_at: String,
}

/// An issue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssueState {
    pub number: u64,
    pub title: String,
    pub body: String,
    pub author: String,
    pub author_association: String,
    /// `open` or `closed`.
    pub state: String,
    pub locked: bool,
    /// Label names, as the repository spells them.
    pub labels: Vec<String>,
    pub comments: Vec<Comment>,
    pub events: Vec<Event>,
    pub created_at: String,
}

/// A pull request; it shares the issue number space, and the issue endpoints
/// (comments, labels, events) work on its number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pull {
    pub number: u64,
    pub title: String,
    pub body: String,
    /// The head branch.
    pub head: String,
    /// The repository holding the head branch (`owner/name`; another one for a fork).
    pub head_repo: String,
    /// The base branch.
    pub base: String,
    pub draft: bool,
    pub author: String,
    pub labels: Vec<String>,
    /// `open` or `closed`.
    pub state: String,
    pub comments: Vec<Comment>,
    pub events: Vec<Event>,
    pub created_at: String,
}

/// A repository.
#[derive(Debug)]
pub struct RepoState {
    /// `owner/name`.
    pub full_name: String,
    pub default_branch: String,
    /// The bare git repository (under the fake's temporary folder).
    pub git: PathBuf,
    pub labels: Vec<Label>,
    pub issues: BTreeMap<u64, IssueState>,
    pub pulls: Vec<Pull>,
    /// login → `admin`, `maintain`, `write`, `triage` or `read`. The owner is `admin`
    /// unless listed; anyone else unlisted is `read`.
    pub permissions: BTreeMap<String, String>,
}

impl RepoState {
    /// The bare repository, opened.
    pub fn repo(&self) -> git2::Repository {
        git2::Repository::open_bare(&self.git).unwrap()
    }

    fn owner(&self) -> &str {
        self.full_name.split('/').next().unwrap_or("")
    }

    /// The label the repository has by this name (case-insensitive).
    pub fn label(&self, name: &str) -> Option<&Label> {
        self.labels
            .iter()
            .find(|l| l.name.to_lowercase() == name.to_lowercase())
    }

    /// The pull request numbered `n`.
    pub fn pull(&self, n: u64) -> Option<&Pull> {
        self.pulls.iter().find(|p| p.number == n)
    }

    fn next_number(&self) -> u64 {
        let issues = self.issues.keys().max().copied().unwrap_or(0);
        let pulls = self.pulls.iter().map(|p| p.number).max().unwrap_or(0);
        issues.max(pulls) + 1
    }

    fn thread(&mut self, n: u64) -> Option<Thread<'_>> {
        if self.issues.contains_key(&n) {
            let i = self.issues.get_mut(&n)?;
            return Some(Thread {
                labels: &mut i.labels,
                comments: &mut i.comments,
                events: &mut i.events,
                locked: i.locked,
            });
        }
        let p = self.pulls.iter_mut().find(|p| p.number == n)?;
        Some(Thread {
            labels: &mut p.labels,
            comments: &mut p.comments,
            events: &mut p.events,
            locked: false,
        })
    }

    fn comments_mut(&mut self) -> impl Iterator<Item = &mut Comment> {
        self.issues
            .values_mut()
            .flat_map(|i| i.comments.iter_mut())
            .chain(self.pulls.iter_mut().flat_map(|p| p.comments.iter_mut()))
    }

    /// The comment with this id, on any issue or pull request.
    pub fn comment(&self, id: u64) -> Option<&Comment> {
        self.issues
            .values()
            .flat_map(|i| i.comments.iter())
            .chain(self.pulls.iter().flat_map(|p| p.comments.iter()))
            .find(|c| c.id == id)
    }
}

/// The parts of an issue or pull request the issue endpoints change.
struct Thread<'a> {
    labels: &'a mut Vec<String>,
    comments: &'a mut Vec<Comment>,
    events: &'a mut Vec<Event>,
    locked: bool,
}

/// A request that was not a GET.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Write {
    pub method: String,
    /// The path, percent-decoded, without the query.
    pub path: String,
    /// The token's login (empty when the token was refused).
    pub actor: String,
    /// The status answered.
    pub status: u16,
    /// What it did: an implicitly created label, whose comment was edited, a ref
    /// update's `force=… fast_forward=… old=… new=…`.
    pub detail: String,
}

impl Write {
    /// True when it succeeded.
    pub fn ok(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

/// Everything the fake knows.
#[derive(Debug)]
pub struct World {
    /// token → what it is.
    pub tokens: BTreeMap<String, TokenKind>,
    /// `owner/name` → the repository.
    pub repos: BTreeMap<String, RepoState>,
    /// Every non-GET request, in order.
    pub log: Vec<Write>,
    /// The last id given to a comment (or another object).
    pub next_id: u64,
    /// The largest page a list answers (100 on GitHub); lower it to force pages.
    pub page_cap: usize,
    /// The fake's base URL (for `Link` headers).
    pub url: String,
    /// The fake clock: seconds after 2024-01-01T00:00:00Z.
    pub tick: i64,
    /// Holds the bare repositories: `<root>/<owner>/<name>.git`.
    pub git_root: tempfile::TempDir,
    /// Outages: requests whose path ends with the text get the status, this many times.
    pub outages: Vec<(String, u16, usize)>,
    /// A GitHub App, when one is installed on every repository.
    pub app: Option<FakeApp>,
}

/// A GitHub App: its JWTs are checked against `public_pem` (RS256, `iss` = the id).
#[derive(Debug, Clone, Default)]
pub struct FakeApp {
    pub id: u64,
    pub slug: String,
    pub public_pem: String,
    pub installation: u64,
    /// The hook's deliveries, as `GET /app/hook/deliveries` lists them.
    pub deliveries: Vec<Value>,
    /// Delivery ids redelivery was asked for.
    pub redelivered: Vec<u64>,
    /// Installation tokens issued.
    pub tokens_issued: usize,
}

const EPOCH: i64 = 1_704_067_200;

fn iso(secs: i64) -> String {
    chrono::DateTime::from_timestamp(secs, 0)
        .map(|d| d.format("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_default()
}

/// A stable numeric id for a login (or any name).
pub fn user_id(login: &str) -> u64 {
    login
        .to_lowercase()
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        })
        % 90_000_000
        + 10_000
}

/// True for a login GitHub could give a user: letters, digits and single hyphens, at
/// most 39 characters (so no `[bot]` suffix, no `/`, no `..`).
pub fn valid_login(login: &str) -> bool {
    !login.is_empty()
        && login.len() <= 39
        && login.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        && !login.starts_with('-')
        && !login.ends_with('-')
        && !login.contains("--")
}

fn level(permission: &str) -> u8 {
    match permission {
        "admin" => 4,
        "maintain" => 3,
        "write" => 2,
        "triage" => 1,
        _ => 0,
    }
}

fn mode(m: &str) -> Option<git2::FileMode> {
    Some(match m {
        "100644" => git2::FileMode::Blob,
        "100755" => git2::FileMode::BlobExecutable,
        "040000" | "40000" => git2::FileMode::Tree,
        "160000" => git2::FileMode::Commit,
        "120000" => git2::FileMode::Link,
        _ => return None,
    })
}

/// A path git and GitHub accept in a tree: relative, no empty, `.`, `..` or `.git`
/// component, no NUL.
fn valid_tree_path(p: &str) -> bool {
    !p.is_empty()
        && !p.contains('\0')
        && p.split('/')
            .all(|c| !c.is_empty() && c != "." && c != ".." && !c.eq_ignore_ascii_case(".git"))
}

/// Percent-decode one path segment (UTF-8; invalid bytes become U+FFFD).
pub fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let hex = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2]))
        {
            out.push(h * 16 + l);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn user_json(login: &str) -> Value {
    json!({
        "login": login,
        "id": user_id(login),
        "node_id": format!("U_{}", user_id(login)),
        "url": format!("https://api.github.com/users/{login}"),
        "html_url": format!("https://github.com/{login}"),
        "type": if login.ends_with("[bot]") { "Bot" } else { "User" },
        "site_admin": false,
    })
}

fn sig_json(s: &git2::Signature<'_>) -> Value {
    json!({
        "name": s.name().unwrap_or(""),
        "email": s.email().unwrap_or(""),
        "date": iso(s.when().seconds()),
    })
}

fn label_json(full: &str, l: &Label) -> Value {
    let id = user_id(&format!("label:{full}:{}", l.name));
    json!({
        "id": id,
        "node_id": format!("LA_{id}"),
        "url": format!("https://api.github.com/repos/{full}/labels/{}", l.name),
        "name": l.name,
        "color": l.color,
        "default": false,
        "description": l.description,
    })
}

fn issue_template() -> &'static Value {
    static T: std::sync::OnceLock<Value> = std::sync::OnceLock::new();
    T.get_or_init(|| {
        serde_json::from_str(&std::fs::read_to_string(data("github/issue.json")).unwrap()).unwrap()
    })
}

/// An answer in the making.
struct Reply {
    status: u16,
    body: Option<Value>,
    link: Option<String>,
}

type Res = Result<Reply, Reply>;

fn reply(status: u16, body: Value) -> Reply {
    Reply {
        status,
        body: Some(body),
        link: None,
    }
}

fn ok(body: Value) -> Res {
    Ok(reply(200, body))
}

fn created(body: Value) -> Res {
    Ok(reply(201, body))
}

fn no_content() -> Res {
    Ok(Reply {
        status: 204,
        body: None,
        link: None,
    })
}

fn fail(status: u16, message: &str) -> Reply {
    reply(
        status,
        json!({"message": message, "documentation_url": "https://docs.github.com/rest"}),
    )
}

fn not_found() -> Reply {
    fail(404, "Not Found")
}

/// A 422 `Validation Failed` with one error, as GitHub words them.
fn invalid(resource: &str, field: &str, code: &str, message: Option<&str>) -> Reply {
    let mut e = json!({"resource": resource, "field": field, "code": code});
    if let Some(m) = message {
        e["message"] = json!(m);
    }
    reply(
        422,
        json!({"message": "Validation Failed", "errors": [e], "documentation_url": "https://docs.github.com/rest"}),
    )
}

impl From<git2::Error> for Reply {
    fn from(e: git2::Error) -> Self {
        fail(422, &format!("git: {}", e.message()))
    }
}

/// One request, parsed.
struct Q {
    method: String,
    raw_path: String,
    segs: Vec<String>,
    /// A bearer that is no token: maybe an App's JWT.
    jwt: Option<String>,
    raw_query: String,
    query: Vec<(String, String)>,
    body: Value,
    token: Option<TokenKind>,
    detail: String,
    unmodelled: bool,
}

impl Q {
    fn param(&self, k: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.as_str())
    }

    fn login(&self) -> &str {
        self.token.as_ref().map(TokenKind::login).unwrap_or("")
    }

    fn str(&self, k: &str) -> Option<&str> {
        self.body.get(k).and_then(Value::as_str)
    }

    fn note(&mut self, text: &str) {
        if !self.detail.is_empty() {
            self.detail.push_str("; ");
        }
        self.detail.push_str(text);
    }
}

impl World {
    fn new(url: String) -> Self {
        Self {
            tokens: BTreeMap::new(),
            repos: BTreeMap::new(),
            log: Vec::new(),
            next_id: 1000,
            page_cap: 100,
            url,
            tick: 0,
            git_root: tempfile::tempdir().unwrap(),
            outages: Vec::new(),
            app: None,
        }
    }

    /// Now on the fake clock (each call a minute later), as GitHub writes times.
    pub fn now(&mut self) -> String {
        self.tick += 60;
        iso(EPOCH + self.tick)
    }

    fn now_time(&mut self) -> git2::Time {
        self.tick += 60;
        git2::Time::new(EPOCH + self.tick, 0)
    }

    fn id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    fn key(&self, full: &str) -> Option<String> {
        self.repos
            .keys()
            .find(|k| k.eq_ignore_ascii_case(full))
            .cloned()
    }

    // ---------------------------------------------------------------------------
    // Helpers for tests
    // ---------------------------------------------------------------------------

    /// A user's token acting as `login`.
    pub fn add_user_token(&mut self, token: &str, login: &str) {
        self.tokens
            .insert(token.into(), TokenKind::User(login.into()));
    }

    /// An App installation token (an Action's `GITHUB_TOKEN`) acting as `login`.
    pub fn add_installation_token(&mut self, token: &str, login: &str) {
        self.tokens
            .insert(token.into(), TokenKind::Installation(login.into()));
    }

    /// A repository `owner/name` whose default branch holds `files` in one commit.
    /// Returns that commit.
    pub fn add_repo(&mut self, full: &str, default_branch: &str, files: &[(&str, &str)]) -> String {
        let (owner, name) = full.split_once('/').expect("owner/name");
        let git = self.git_root.path().join(owner).join(format!("{name}.git"));
        let mut opts = git2::RepositoryInitOptions::new();
        opts.bare(true).initial_head(default_branch);
        let repo = git2::Repository::init_opts(&git, &opts).unwrap();
        let time = self.now_time();
        let sig = git2::Signature::new(owner, &format!("{owner}@users.noreply.github.com"), &time)
            .unwrap();
        let files: Vec<(&str, &[u8])> = files.iter().map(|(p, c)| (*p, c.as_bytes())).collect();
        let oid = commit_files(&repo, None, &files, &sig, "Initial commit").unwrap();
        repo.reference(
            &format!("refs/heads/{default_branch}"),
            oid,
            true,
            "fake: initial commit",
        )
        .unwrap();
        self.repos.insert(
            full.into(),
            RepoState {
                full_name: full.into(),
                default_branch: default_branch.into(),
                git,
                labels: Vec::new(),
                issues: BTreeMap::new(),
                pulls: Vec::new(),
                permissions: BTreeMap::new(),
            },
        );
        oid.to_string()
    }

    /// The repository (panics when there is none: a test setup mistake).
    pub fn repo(&self, full: &str) -> &RepoState {
        self.key(full)
            .and_then(|k| self.repos.get(&k))
            .unwrap_or_else(|| panic!("the fake has no repository {full}"))
    }

    pub fn repo_mut(&mut self, full: &str) -> &mut RepoState {
        let k = self
            .key(full)
            .unwrap_or_else(|| panic!("the fake has no repository {full}"));
        self.repos.get_mut(&k).unwrap()
    }

    /// Give `login` a permission on the repository (`admin`, `maintain`, `write`,
    /// `triage`, `read`).
    pub fn set_permission(&mut self, repo: &str, login: &str, permission: &str) {
        self.repo_mut(repo)
            .permissions
            .insert(login.into(), permission.into());
    }

    /// `login`'s permission on the repository, as the permission endpoint answers it.
    pub fn permission(&self, repo: &str, login: &str) -> String {
        let r = self.repo(repo);
        if let Some((_, p)) = r
            .permissions
            .iter()
            .find(|(l, _)| l.eq_ignore_ascii_case(login))
        {
            return p.clone();
        }
        if login.eq_ignore_ascii_case(r.owner()) {
            return "admin".into();
        }
        "read".into()
    }

    /// The author association GitHub would show for `login` on the repository.
    pub fn association(&self, repo: &str, login: &str) -> String {
        let r = self.repo(repo);
        if login.eq_ignore_ascii_case(r.owner()) {
            return "OWNER".into();
        }
        match r
            .permissions
            .iter()
            .find(|(l, _)| l.eq_ignore_ascii_case(login))
            .map(|(_, p)| p.as_str())
        {
            Some("admin" | "maintain") => "MEMBER",
            Some(_) => "COLLABORATOR",
            None => "NONE",
        }
        .into()
    }

    /// What the token may do: the listed permission, else `admin` for the owner,
    /// `write` for an installation, `read` for anyone else.
    fn level_of(&self, repo: &str, token: &TokenKind) -> u8 {
        let r = self.repo(repo);
        let listed = r
            .permissions
            .iter()
            .find(|(l, _)| l.eq_ignore_ascii_case(token.login()));
        match (listed, token) {
            (Some((_, p)), _) => level(p),
            (None, TokenKind::Installation(_)) => level("write"),
            (None, TokenKind::User(l)) if l.eq_ignore_ascii_case(r.owner()) => level("admin"),
            _ => 0,
        }
    }

    /// Add an issue; its labels are created in the repository when missing and come
    /// with `labeled` events by the author.
    #[allow(clippy::too_many_arguments)]
    pub fn add_issue(
        &mut self,
        repo: &str,
        number: u64,
        title: &str,
        body: &str,
        author: &str,
        association: &str,
        labels: &[&str],
    ) {
        let created_at = self.now();
        let r = self.repo_mut(repo);
        assert!(
            r.pull(number).is_none(),
            "#{number} is a pull request in {repo}"
        );
        let mut names = Vec::new();
        let mut events = Vec::new();
        for l in labels {
            let name = ensure_label(r, l);
            events.push(Event {
                event: "labeled".into(),
                label: name.clone(),
                actor: author.into(),
                created_at: created_at.clone(),
            });
            names.push(name);
        }
        r.issues.insert(
            number,
            IssueState {
                number,
                title: title.into(),
                body: body.into(),
                author: author.into(),
                author_association: association.into(),
                state: "open".into(),
                locked: false,
                labels: names,
                comments: Vec::new(),
                events,
                created_at,
            },
        );
    }

    /// The issue (panics when there is none).
    pub fn issue(&self, repo: &str, number: u64) -> &IssueState {
        self.repo(repo)
            .issues
            .get(&number)
            .unwrap_or_else(|| panic!("{repo} has no issue #{number}"))
    }

    pub fn issue_mut(&mut self, repo: &str, number: u64) -> &mut IssueState {
        self.repo_mut(repo)
            .issues
            .get_mut(&number)
            .unwrap_or_else(|| panic!("{repo} has no issue #{number}"))
    }

    /// A comment by `author` on issue or PR `number`; its association follows the
    /// author's permission. Returns its id.
    pub fn add_comment(&mut self, repo: &str, number: u64, author: &str, body: &str) -> u64 {
        let id = self.id();
        let created_at = self.now();
        let author_association = self.association(repo, author);
        let t = self
            .repo_mut(repo)
            .thread(number)
            .unwrap_or_else(|| panic!("{repo} has no issue or PR #{number}"));
        t.comments.push(Comment {
            id,
            author: author.into(),
            author_association,
            body: body.into(),
            created_at,
            edited_by: Vec::new(),
        });
        id
    }

    /// The comment with this id (panics when there is none).
    pub fn comment(&self, repo: &str, id: u64) -> &Comment {
        self.repo(repo)
            .comment(id)
            .unwrap_or_else(|| panic!("{repo} has no comment {id}"))
    }

    /// A repository label (grey, no description); nothing when it exists.
    pub fn add_label(&mut self, repo: &str, name: &str) {
        ensure_label(self.repo_mut(repo), name);
    }

    /// `actor` puts `label` on issue or PR `number` (created in the repository when
    /// missing), with its `labeled` event.
    pub fn label_issue(&mut self, repo: &str, number: u64, label: &str, actor: &str) {
        let created_at = self.now();
        let r = self.repo_mut(repo);
        let name = ensure_label(r, label);
        let t = r
            .thread(number)
            .unwrap_or_else(|| panic!("{repo} has no issue or PR #{number}"));
        if !t.labels.iter().any(|l| l.eq_ignore_ascii_case(&name)) {
            t.labels.push(name.clone());
        }
        t.events.push(Event {
            event: "labeled".into(),
            label: name,
            actor: actor.into(),
            created_at,
        });
    }

    /// `actor` takes `label` off issue `number`, with its `unlabeled` event.
    pub fn unlabel_issue(&mut self, repo: &str, number: u64, label: &str, actor: &str) {
        let created_at = self.now();
        let r = self.repo_mut(repo);
        let t = r
            .thread(number)
            .unwrap_or_else(|| panic!("{repo} has no issue or PR #{number}"));
        t.labels.retain(|l| !l.eq_ignore_ascii_case(label));
        t.events.push(Event {
            event: "unlabeled".into(),
            label: label.into(),
            actor: actor.into(),
            created_at,
        });
    }

    /// An open pull request by `author` from `head` (a branch of this repository)
    /// into `base`. Returns its number.
    pub fn add_pull(
        &mut self,
        repo: &str,
        title: &str,
        head: &str,
        base: &str,
        author: &str,
        draft: bool,
    ) -> u64 {
        let created_at = self.now();
        let r = self.repo_mut(repo);
        let number = r.next_number();
        let head_repo = r.full_name.clone();
        r.pulls.push(Pull {
            number,
            title: title.into(),
            body: String::new(),
            head: head.into(),
            head_repo,
            base: base.into(),
            draft,
            author: author.into(),
            labels: Vec::new(),
            state: "open".into(),
            comments: Vec::new(),
            events: Vec::new(),
            created_at,
        });
        number
    }

    /// A commit by `author_name` writing `files` on top of `parent` (`None`: the
    /// branch's head, else the default branch's), and `branch` moved to it (created
    /// when missing), as a contributor's push. Returns the commit.
    pub fn push_commit(
        &mut self,
        repo: &str,
        branch: &str,
        parent: Option<&str>,
        files: &[(&str, &str)],
        author_name: &str,
        message: &str,
    ) -> String {
        let time = self.now_time();
        let r = self.repo(repo);
        let git = r.repo();
        let parent = match parent {
            Some(p) => git2::Oid::from_str(p).unwrap(),
            None => head_of(&git, branch)
                .or_else(|| head_of(&git, &r.default_branch))
                .expect("the default branch has a commit"),
        };
        let sig = git2::Signature::new(
            author_name,
            &format!("{author_name}@users.noreply.github.com"),
            &time,
        )
        .unwrap();
        let files: Vec<(&str, &[u8])> = files.iter().map(|(p, c)| (*p, c.as_bytes())).collect();
        let oid = commit_files(&git, Some(parent), &files, &sig, message).unwrap();
        git.reference(&format!("refs/heads/{branch}"), oid, true, "fake: push")
            .unwrap();
        oid.to_string()
    }

    /// The commit `branch` points at.
    pub fn branch_head(&self, repo: &str, branch: &str) -> Option<String> {
        head_of(&self.repo(repo).repo(), branch).map(|o| o.to_string())
    }

    /// A file's text at a branch, tag or commit.
    pub fn file_at(&self, repo: &str, git_ref: &str, path: &str) -> Option<String> {
        let git = self.repo(repo).repo();
        let commit = git.find_commit(resolve(&git, git_ref)?).ok()?;
        let entry = commit
            .tree()
            .ok()?
            .get_path(std::path::Path::new(path))
            .ok()?;
        let blob = git.find_blob(entry.id()).ok()?;
        Some(String::from_utf8_lossy(blob.content()).into_owned())
    }

    /// The bare repository's folder (clone it, or open it with git2).
    pub fn bare_path(&self, repo: &str) -> PathBuf {
        self.repo(repo).git.clone()
    }

    /// A `github.clone_url` template that clones every fake repository from disk.
    pub fn clone_url(&self) -> String {
        format!("{}/{{repo}}.git", self.git_root.path().display())
    }

    /// The writes (non-GET requests) under `/repos/<repo>`.
    pub fn writes(&self, repo: &str) -> Vec<Write> {
        let prefix = format!("/repos/{}", repo.to_lowercase());
        self.log
            .iter()
            .filter(|w| {
                let p = w.path.to_lowercase();
                p == prefix || p.starts_with(&format!("{prefix}/"))
            })
            .cloned()
            .collect()
    }

    // ---------------------------------------------------------------------------
    // Serving
    // ---------------------------------------------------------------------------

    fn handle(&mut self, r: &Request) -> ResponseTemplate {
        let raw_path = r.url.path().to_string();
        let segs: Vec<String> = raw_path
            .trim_start_matches('/')
            .split('/')
            .map(percent_decode)
            .collect();
        let auth = r
            .headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let bearer = ["Bearer ", "bearer ", "token ", "Token "]
            .iter()
            .find_map(|p| auth.strip_prefix(p))
            .map(|t| t.trim().to_string());
        let token = bearer.as_ref().and_then(|t| self.tokens.get(t)).cloned();
        let jwt = bearer.filter(|t| token.is_none() && t.matches('.').count() == 2);
        let mut q = Q {
            method: r.method.as_str().to_uppercase(),
            raw_path,
            segs,
            raw_query: r.url.query().unwrap_or("").to_string(),
            query: r
                .url
                .query_pairs()
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect(),
            body: serde_json::from_slice(&r.body).unwrap_or(Value::Null),
            token,
            jwt,
            detail: String::new(),
            unmodelled: false,
        };
        let reply = if q.method != "GET" && !r.body.is_empty() && q.body.is_null() {
            Err(fail(400, "Problems parsing JSON"))
        } else {
            self.route(&mut q)
        }
        .unwrap_or_else(|e| e);
        if q.unmodelled {
            eprintln!(
                "fake GitHub: unmodelled request {} {}{}{} (answered 404)",
                q.method,
                q.raw_path,
                if q.raw_query.is_empty() { "" } else { "?" },
                q.raw_query
            );
        }
        if q.method != "GET" {
            self.log.push(Write {
                method: q.method.clone(),
                path: format!("/{}", q.segs.join("/")),
                actor: q.login().to_string(),
                status: reply.status,
                detail: q.detail.clone(),
            });
        }
        let mut t = ResponseTemplate::new(reply.status)
            .insert_header("x-ratelimit-limit", "5000")
            .insert_header("x-ratelimit-remaining", "4999");
        if let Some(l) = reply.link {
            t = t.insert_header("link", l.as_str());
        }
        match reply.body {
            Some(b) => t.set_body_json(b),
            None => t,
        }
    }

    fn route(&mut self, q: &mut Q) -> Res {
        let path = format!("/{}", q.segs.join("/"));
        if let Some(o) = self
            .outages
            .iter_mut()
            .find(|(p, _, n)| *n > 0 && path.ends_with(p.as_str()))
        {
            o.2 -= 1;
            return Err(fail(o.1, "Server Error"));
        }
        if let Some(jwt) = q.jwt.clone() {
            return self.route_app(q, &jwt);
        }
        let Some(token) = q.token.clone() else {
            return Err(fail(401, "Bad credentials"));
        };
        let segs = q.segs.clone();
        let s: Vec<&str> = segs.iter().map(String::as_str).collect();
        match (q.method.as_str(), s.as_slice()) {
            ("GET", ["user"]) => match token {
                TokenKind::User(login) => ok(user_json(&login)),
                TokenKind::Installation(_) => {
                    Err(fail(403, "Resource not accessible by integration"))
                }
            },
            (_, ["repos", owner, name, rest @ ..]) => {
                let Some(full) = self.key(&format!("{owner}/{name}")) else {
                    return Err(not_found());
                };
                self.route_repo(q, &full, &token, rest)
            }
            _ => {
                q.unmodelled = true;
                Err(not_found())
            }
        }
    }

    /// The App's endpoints, with its JWT checked against its public key.
    fn route_app(&mut self, q: &mut Q, jwt: &str) -> Res {
        let Some(app) = self.app.clone() else {
            return Err(fail(401, "A JSON web token could not be decoded"));
        };
        let key = jsonwebtoken::DecodingKey::from_rsa_pem(app.public_pem.as_bytes())
            .map_err(|_| fail(500, "bad fake key"))?;
        let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
        v.set_issuer(&[app.id.to_string()]);
        if jsonwebtoken::decode::<Value>(jwt, &key, &v).is_err() {
            return Err(fail(401, "A JSON web token could not be decoded"));
        }
        let segs = q.segs.clone();
        let s: Vec<&str> = segs.iter().map(String::as_str).collect();
        match (q.method.as_str(), s.as_slice()) {
            ("GET", ["app"]) => ok(json!({"id": app.id, "slug": app.slug})),
            ("GET", ["repos", owner, name, "installation"]) => {
                if self.key(&format!("{owner}/{name}")).is_none() {
                    return Err(not_found());
                }
                ok(json!({"id": app.installation, "app_id": app.id}))
            }
            ("POST", ["app", "installations", id, "access_tokens"]) => {
                if id.parse::<u64>().ok() != Some(app.installation) {
                    return Err(not_found());
                }
                let login = format!("{}[bot]", app.slug);
                let n = app.tokens_issued + 1;
                let token = format!("ghs_fakeapp{n:030}");
                self.tokens
                    .insert(token.clone(), TokenKind::Installation(login.clone()));
                let repos: Vec<String> = self.repos.keys().cloned().collect();
                for r in repos {
                    self.set_permission(&r, &login, "write");
                }
                if let Some(a) = self.app.as_mut() {
                    a.tokens_issued = n;
                }
                q.note(&format!("installation token {n}"));
                created(
                    json!({"token": token, "expires_at": iso(chrono::Utc::now().timestamp() + 3600)}),
                )
            }
            ("GET", ["app", "hook", "deliveries"]) => ok(Value::Array(app.deliveries.clone())),
            ("POST", ["app", "hook", "deliveries", id, "attempts"]) => {
                let id = id.parse::<u64>().map_err(|_| not_found())?;
                if let Some(a) = self.app.as_mut() {
                    a.redelivered.push(id);
                }
                Ok(reply(202, json!({})))
            }
            _ => Err(fail(
                403,
                "this endpoint takes an installation token, not the App's JWT",
            )),
        }
    }

    fn route_repo(&mut self, q: &mut Q, full: &str, token: &TokenKind, rest: &[&str]) -> Res {
        let num = |s: &str| s.parse::<u64>().map_err(|_| not_found());
        let method = q.method.clone();
        match (method.as_str(), rest) {
            ("GET", []) => {
                let r = self.repo(full);
                let lvl = self.level_of(full, token);
                ok(json!({
                    "id": user_id(&format!("repo:{full}")),
                    "name": full.split('/').nth(1),
                    "full_name": full,
                    "owner": user_json(r.owner()),
                    "private": false,
                    "html_url": format!("https://github.com/{full}"),
                    "default_branch": r.default_branch,
                    "permissions": {"admin": lvl >= 4, "maintain": lvl >= 3, "push": lvl >= 2, "triage": lvl >= 1, "pull": true},
                }))
            }
            ("GET", ["issues"]) => self.list_issues(q, full),
            ("GET", ["issues", "comments", id]) => {
                let id = num(id)?;
                let c = self.repo(full).comment(id).ok_or_else(not_found)?;
                let n = self.comment_issue(full, id).unwrap_or(0);
                ok(comment_json(full, n, c))
            }
            ("GET", ["issues", n]) => ok(self.issue_json(full, num(n)?)?),
            ("GET", ["issues", n, "comments"]) => {
                let n = num(n)?;
                let r = self.repo_mut(full);
                let t = r.thread(n).ok_or_else(not_found)?;
                let items = t
                    .comments
                    .iter()
                    .map(|c| comment_json(full, n, c))
                    .collect();
                Ok(self.page(q, items))
            }
            ("POST", ["issues", n, "comments"]) => self.post_comment(q, full, token, num(n)?),
            ("PATCH", ["issues", "comments", id]) => {
                self.edit_comment(q, full, token, num(id)?, false)
            }
            ("POST", ["issues", "comments", id, "reactions"]) => {
                let id = num(id)?;
                if self.repo(full).comment(id).is_none() {
                    return Err(not_found());
                }
                let content = q.str("content").unwrap_or("").to_string();
                q.note(&format!("reaction {content} by {}", token.login()));
                created(json!({"id": id, "content": content, "user": user_json(token.login())}))
            }
            ("DELETE", ["issues", "comments", id]) => {
                self.edit_comment(q, full, token, num(id)?, true)
            }
            ("GET", ["issues", n, "events"]) => {
                let n = num(n)?;
                let r = self.repo_mut(full);
                let t = r.thread(n).ok_or_else(not_found)?;
                let items = t
                    .events
                    .iter()
                    .enumerate()
                    .map(|(i, e)| {
                        json!({
                            "id": user_id(&format!("event:{full}:{n}:{i}")),
                            "actor": user_json(&e.actor),
                            "event": e.event,
                            "commit_id": null,
                            "created_at": e.created_at,
                            "label": {"name": e.label, "color": "ededed"},
                            "performed_via_github_app": null,
                        })
                    })
                    .collect();
                Ok(self.page(q, items))
            }
            ("GET", ["issues", n, "labels"]) => {
                let n = num(n)?;
                let r = self.repo_mut(full);
                let names = r.thread(n).ok_or_else(not_found)?.labels.clone();
                let items = names
                    .iter()
                    .filter_map(|l| r.label(l))
                    .map(|l| label_json(full, l))
                    .collect();
                Ok(self.page(q, items))
            }
            ("POST", ["issues", n, "labels"]) => self.add_labels(q, full, token, num(n)?),
            ("DELETE", ["issues", n, "labels", name]) => {
                self.remove_label(q, full, token, num(n)?, name)
            }
            ("GET", ["labels"]) => {
                let items = self
                    .repo(full)
                    .labels
                    .iter()
                    .map(|l| label_json(full, l))
                    .collect();
                Ok(self.page(q, items))
            }
            ("GET", ["labels", name]) => {
                let l = self.repo(full).label(name).ok_or_else(not_found)?;
                ok(label_json(full, l))
            }
            ("POST", ["labels"]) => {
                self.require(
                    full,
                    token,
                    "write",
                    "Must have admin rights to Repository.",
                )?;
                let name = q
                    .str("name")
                    .ok_or_else(|| invalid("Label", "name", "missing_field", None))?
                    .to_string();
                let l = Label {
                    name: name.clone(),
                    color: q.str("color").unwrap_or("ededed").to_string(),
                    description: q.str("description").map(String::from),
                };
                let r = self.repo_mut(full);
                if r.label(&name).is_some() {
                    return Err(invalid("Label", "name", "already_exists", None));
                }
                r.labels.push(l.clone());
                q.note(&format!("created label {name:?}"));
                created(label_json(full, &l))
            }
            ("GET", ["collaborators", login, "permission"]) => {
                if !valid_login(login) {
                    return Err(not_found());
                }
                let p = self.permission(full, login);
                ok(json!({"permission": p, "role_name": p, "user": user_json(login)}))
            }
            ("GET", ["git", "ref", r @ ..]) if !r.is_empty() => {
                let name = format!("refs/{}", r.join("/"));
                let git = self.repo(full).repo();
                let sha = git
                    .find_reference(&name)
                    .ok()
                    .and_then(|r| r.target())
                    .ok_or_else(not_found)?;
                ok(ref_json(full, &name, sha))
            }
            ("GET", ["git", "commits", sha]) => {
                let git = self.repo(full).repo();
                let oid = git2::Oid::from_str(sha).map_err(|_| not_found())?;
                let c = git.find_commit(oid).map_err(|_| not_found())?;
                ok(commit_json(full, &c))
            }
            ("GET", ["contents", path @ ..]) => self.contents(q, full, &path.join("/")),
            ("POST", ["git", "blobs"]) => {
                self.require(full, token, "write", "Not Found")?;
                let content = q
                    .str("content")
                    .ok_or_else(|| invalid("Blob", "content", "missing_field", None))?;
                let bytes = match q.str("encoding").unwrap_or("utf-8") {
                    "base64" => {
                        let clean: String = content.split_whitespace().collect();
                        base64::engine::general_purpose::STANDARD
                            .decode(clean)
                            .map_err(|_| fail(422, "Invalid base64 content"))?
                    }
                    "utf-8" | "utf8" => content.as_bytes().to_vec(),
                    other => {
                        return Err(fail(422, &format!("encoding {other:?} is not supported")));
                    }
                };
                let oid = self.repo(full).repo().blob(&bytes)?;
                created(json!({
                    "sha": oid.to_string(),
                    "url": format!("https://api.github.com/repos/{full}/git/blobs/{oid}"),
                }))
            }
            ("POST", ["git", "trees"]) => {
                self.require(full, token, "write", "Not Found")?;
                self.post_tree(q, full)
            }
            ("POST", ["git", "commits"]) => {
                self.require(full, token, "write", "Not Found")?;
                self.post_commit(q, full, token)
            }
            ("POST", ["git", "refs"]) => {
                self.require(full, token, "write", "Not Found")?;
                let name = q.str("ref").unwrap_or("").to_string();
                if !name.starts_with("refs/")
                    || name.matches('/').count() < 2
                    || !git2::Reference::is_valid_name(&name)
                {
                    return Err(fail(422, "Reference name is invalid"));
                }
                let git = self.repo(full).repo();
                let oid = q
                    .str("sha")
                    .and_then(|s| git2::Oid::from_str(s).ok())
                    .filter(|o| git.find_object(*o, None).is_ok())
                    .ok_or_else(|| fail(422, "Object does not exist"))?;
                if git.find_reference(&name).is_ok() {
                    return Err(fail(422, "Reference already exists"));
                }
                git.reference(&name, oid, false, "fake: create ref")?;
                q.note(&format!("{name} created at {oid}"));
                created(ref_json(full, &name, oid))
            }
            ("PATCH", ["git", "refs", r @ ..]) if !r.is_empty() => {
                self.require(full, token, "write", "Not Found")?;
                self.patch_ref(q, full, &format!("refs/{}", r.join("/")))
            }
            ("DELETE", ["git", "refs", r @ ..]) if !r.is_empty() => {
                self.require(full, token, "write", "Not Found")?;
                let name = format!("refs/{}", r.join("/"));
                let git = self.repo(full).repo();
                let mut reference = git
                    .find_reference(&name)
                    .map_err(|_| fail(422, "Reference does not exist"))?;
                let was = reference
                    .target()
                    .map(|o| o.to_string())
                    .unwrap_or_default();
                reference.delete()?;
                q.note(&format!("{name} deleted (was {was})"));
                no_content()
            }
            ("GET", ["compare", spec @ ..]) => self.compare(full, &spec.join("/")),
            ("GET", ["pulls"]) => {
                let state = q.param("state").unwrap_or("open").to_string();
                let head = q.param("head").map(String::from);
                let base = q.param("base").map(String::from);
                let r = self.repo(full);
                let items = r
                    .pulls
                    .iter()
                    .filter(|p| state == "all" || p.state == state)
                    .filter(|p| match head.as_deref().and_then(|h| h.split_once(':')) {
                        Some((owner, branch)) => {
                            p.head == branch
                                && p.head_repo
                                    .split('/')
                                    .next()
                                    .unwrap_or("")
                                    .eq_ignore_ascii_case(owner)
                        }
                        // Without `owner:` GitHub ignores the filter.
                        None => true,
                    })
                    .filter(|p| base.as_deref().is_none_or(|b| p.base == b))
                    .rev()
                    .map(|p| pull_json(r, p))
                    .collect();
                Ok(self.page(q, items))
            }
            ("GET", ["pulls", n]) => {
                let r = self.repo(full);
                let p = r.pull(num(n)?).ok_or_else(not_found)?;
                ok(pull_json(r, p))
            }
            ("POST", ["pulls"]) => self.post_pull(q, full, token),
            ("PATCH", ["pulls", n]) => self.patch_pull(q, full, token, num(n)?),
            _ => {
                q.unmodelled = true;
                Err(not_found())
            }
        }
    }

    /// At least `needed` permission, else 403 with `message` (or 404 when the message
    /// is `Not Found`, as GitHub hides what a token may not push to).
    fn require(
        &self,
        full: &str,
        token: &TokenKind,
        needed: &str,
        message: &str,
    ) -> Result<(), Reply> {
        if self.level_of(full, token) >= level(needed) {
            Ok(())
        } else if message == "Not Found" {
            Err(not_found())
        } else {
            Err(fail(403, message))
        }
    }

    /// Answer one page of `items`, with GitHub's `Link` header.
    fn page(&self, q: &Q, items: Vec<Value>) -> Reply {
        let per = q
            .param("per_page")
            .and_then(|v| v.parse::<usize>().ok())
            .unwrap_or(30)
            .clamp(1, 100)
            .min(self.page_cap.max(1));
        let page = q
            .param("page")
            .and_then(|v| v.parse::<usize>().ok())
            .unwrap_or(1)
            .max(1);
        let last = items.len().div_ceil(per).max(1);
        let kept: Vec<&str> = q
            .raw_query
            .split('&')
            .filter(|p| !p.is_empty() && !p.starts_with("page="))
            .collect();
        let url = |n: usize| {
            let mut query = kept.clone();
            let page = format!("page={n}");
            query.push(&page);
            format!("<{}{}?{}>", self.url, q.raw_path, query.join("&"))
        };
        let mut links = Vec::new();
        if page < last {
            links.push(format!("{}; rel=\"next\"", url(page + 1)));
            links.push(format!("{}; rel=\"last\"", url(last)));
        }
        if page > 1 {
            links.push(format!("{}; rel=\"prev\"", url(page - 1)));
            links.push(format!("{}; rel=\"first\"", url(1)));
        }
        let body: Vec<Value> = items.into_iter().skip((page - 1) * per).take(per).collect();
        Reply {
            status: 200,
            body: Some(Value::Array(body)),
            link: (!links.is_empty()).then(|| links.join(", ")),
        }
    }

    fn comment_issue(&self, full: &str, id: u64) -> Option<u64> {
        let r = self.repo(full);
        r.issues
            .values()
            .find(|i| i.comments.iter().any(|c| c.id == id))
            .map(|i| i.number)
            .or_else(|| {
                r.pulls
                    .iter()
                    .find(|p| p.comments.iter().any(|c| c.id == id))
                    .map(|p| p.number)
            })
    }

    /// The issue form of issue or PR `n`.
    fn issue_json(&self, full: &str, n: u64) -> Result<Value, Reply> {
        let r = self.repo(full);
        let mut v = issue_template().clone();
        let base = format!("https://api.github.com/repos/{full}/issues/{n}");
        let labels = |names: &[String]| -> Value {
            names
                .iter()
                .map(|l| match r.label(l) {
                    Some(l) => label_json(full, l),
                    None => json!({"name": l}),
                })
                .collect()
        };
        let id = user_id(&format!("issue:{full}#{n}"));
        v["url"] = json!(base);
        v["repository_url"] = json!(format!("https://api.github.com/repos/{full}"));
        v["labels_url"] = json!(format!("{base}/labels{{/name}}"));
        v["comments_url"] = json!(format!("{base}/comments"));
        v["events_url"] = json!(format!("{base}/events"));
        v["timeline_url"] = json!(format!("{base}/timeline"));
        v["id"] = json!(id);
        v["node_id"] = json!(format!("I_{id}"));
        v["number"] = json!(n);
        if let Some(i) = r.issues.get(&n) {
            v["html_url"] = json!(format!("https://github.com/{full}/issues/{n}"));
            v["title"] = json!(i.title);
            v["body"] = json!(i.body);
            v["user"] = user_json(&i.author);
            v["author_association"] = json!(i.author_association);
            v["labels"] = labels(&i.labels);
            v["state"] = json!(i.state);
            v["locked"] = json!(i.locked);
            v["comments"] = json!(i.comments.len());
            v["created_at"] = json!(i.created_at);
            v["updated_at"] = json!(i.created_at);
            return Ok(v);
        }
        let p = r.pull(n).ok_or_else(not_found)?;
        v["html_url"] = json!(format!("https://github.com/{full}/pull/{n}"));
        v["title"] = json!(p.title);
        v["body"] = json!(p.body);
        v["user"] = user_json(&p.author);
        v["author_association"] = json!(self.association(full, &p.author));
        v["labels"] = labels(&p.labels);
        v["state"] = json!(p.state);
        v["comments"] = json!(p.comments.len());
        v["created_at"] = json!(p.created_at);
        v["updated_at"] = json!(p.created_at);
        v["draft"] = json!(p.draft);
        v["pull_request"] = json!({
            "url": format!("https://api.github.com/repos/{full}/pulls/{n}"),
            "html_url": format!("https://github.com/{full}/pull/{n}"),
            "merged_at": null,
        });
        Ok(v)
    }

    fn list_issues(&self, q: &Q, full: &str) -> Res {
        let r = self.repo(full);
        let state = q.param("state").unwrap_or("open");
        let wanted: Vec<String> = q
            .param("labels")
            .map(|l| {
                l.split(',')
                    .map(|s| s.trim().to_lowercase())
                    .filter(|s| !s.is_empty())
                    .collect()
            })
            .unwrap_or_default();
        let mut all: Vec<(u64, String, Vec<String>)> = r
            .issues
            .values()
            .map(|i| (i.number, i.state.clone(), i.labels.clone()))
            .chain(
                r.pulls
                    .iter()
                    .map(|p| (p.number, p.state.clone(), p.labels.clone())),
            )
            .collect();
        all.sort_by_key(|a| std::cmp::Reverse(a.0));
        let mut items = Vec::new();
        for (n, s, labels) in all {
            let has = |w: &String| labels.iter().any(|l| l.to_lowercase() == *w);
            if (state == "all" || s == state) && wanted.iter().all(has) {
                items.push(self.issue_json(full, n)?);
            }
        }
        Ok(self.page(q, items))
    }

    fn post_comment(&mut self, q: &mut Q, full: &str, token: &TokenKind, n: u64) -> Res {
        let body = q
            .str("body")
            .ok_or_else(|| invalid("IssueComment", "body", "missing_field", None))?
            .to_string();
        let lvl = self.level_of(full, token);
        let author_association = self.association(full, token.login());
        let id = self.id();
        let created_at = self.now();
        let r = self.repo_mut(full);
        let t = r.thread(n).ok_or_else(not_found)?;
        if t.locked && lvl < level("write") {
            return Err(fail(
                403,
                "Unable to create comment because issue is locked.",
            ));
        }
        let c = Comment {
            id,
            author: token.login().into(),
            author_association,
            body,
            created_at,
            edited_by: Vec::new(),
        };
        t.comments.push(c.clone());
        q.note(&format!("comment {id} created"));
        created(comment_json(full, n, &c))
    }

    /// PATCH (or DELETE) a comment. Like GitHub, write permission may change anyone's;
    /// the log says when it was not the author's.
    fn edit_comment(
        &mut self,
        q: &mut Q,
        full: &str,
        token: &TokenKind,
        id: u64,
        delete: bool,
    ) -> Res {
        let lvl = self.level_of(full, token);
        let n = self.comment_issue(full, id).ok_or_else(not_found)?;
        let login = token.login().to_string();
        let r = self.repo_mut(full);
        let author = r.comment(id).ok_or_else(not_found)?.author.clone();
        let own = author.eq_ignore_ascii_case(&login);
        if !own && lvl < level("write") {
            return Err(fail(403, "Must have admin rights to Repository."));
        }
        let whose = if own {
            "its author".to_string()
        } else {
            format!("NOT ITS AUTHOR (comment by {author})")
        };
        if delete {
            if let Some(t) = r.thread(n) {
                t.comments.retain(|c| c.id != id);
            }
            q.note(&format!("comment {id} on #{n} deleted by {whose}"));
            return no_content();
        }
        let body = q
            .str("body")
            .ok_or_else(|| invalid("IssueComment", "body", "missing_field", None))?
            .to_string();
        let c = r
            .comments_mut()
            .find(|c| c.id == id)
            .ok_or_else(not_found)?;
        c.body = body;
        c.edited_by.push(login);
        let c = c.clone();
        q.note(&format!("comment {id} on #{n} edited by {whose}"));
        ok(comment_json(full, n, &c))
    }

    fn add_labels(&mut self, q: &mut Q, full: &str, token: &TokenKind, n: u64) -> Res {
        let names: Vec<String> = q
            .body
            .get("labels")
            .unwrap_or(&q.body)
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().or_else(|| v.get("name")?.as_str()))
                    .map(String::from)
                    .collect()
            })
            .ok_or_else(|| invalid("Label", "labels", "missing_field", None))?;
        let r = self.repo(full);
        if r.pull(n).is_none() && !r.issues.contains_key(&n) {
            return Err(not_found());
        }
        self.require(
            full,
            token,
            "triage",
            "Must have admin rights to Repository.",
        )?;
        let created_at = self.now();
        let actor = token.login().to_string();
        let r = self.repo_mut(full);
        let mut notes = Vec::new();
        for name in &names {
            let canonical = match r.label(name) {
                Some(l) => l.name.clone(),
                None => {
                    notes.push(format!("created label {name:?} implicitly"));
                    ensure_label(r, name)
                }
            };
            let t = r.thread(n).ok_or_else(not_found)?;
            if !t.labels.iter().any(|l| l.eq_ignore_ascii_case(&canonical)) {
                t.labels.push(canonical.clone());
                t.events.push(Event {
                    event: "labeled".into(),
                    label: canonical.clone(),
                    actor: actor.clone(),
                    created_at: created_at.clone(),
                });
                notes.push(format!("labeled {canonical:?}"));
            }
        }
        let have = r.thread(n).ok_or_else(not_found)?.labels.clone();
        let body = have
            .iter()
            .filter_map(|l| r.label(l))
            .map(|l| label_json(full, l))
            .collect();
        for note in notes {
            q.note(&note);
        }
        ok(body)
    }

    fn remove_label(
        &mut self,
        q: &mut Q,
        full: &str,
        token: &TokenKind,
        n: u64,
        name: &str,
    ) -> Res {
        self.require(
            full,
            token,
            "triage",
            "Must have admin rights to Repository.",
        )?;
        let created_at = self.now();
        let actor = token.login().to_string();
        let r = self.repo_mut(full);
        let t = r.thread(n).ok_or_else(not_found)?;
        let Some(pos) = t.labels.iter().position(|l| l.eq_ignore_ascii_case(name)) else {
            return Err(fail(404, "Label does not exist"));
        };
        let label = t.labels.remove(pos);
        t.events.push(Event {
            event: "unlabeled".into(),
            label: label.clone(),
            actor,
            created_at,
        });
        let have = t.labels.clone();
        q.note(&format!("unlabeled {label:?}"));
        ok(have
            .iter()
            .filter_map(|l| r.label(l))
            .map(|l| label_json(full, l))
            .collect())
    }

    fn contents(&self, q: &Q, full: &str, path: &str) -> Res {
        let r = self.repo(full);
        let git = r.repo();
        let spec = q.param("ref").unwrap_or(&r.default_branch).to_string();
        let oid = resolve(&git, &spec)
            .ok_or_else(|| fail(404, &format!("No commit found for the ref {spec}")))?;
        let tree = git.find_commit(oid)?.tree()?;
        let path = path.trim_matches('/');
        let item = |name: &str, p: &str, e: &git2::TreeEntry<'_>| {
            let kind = match e.filemode() {
                0o040000 => "dir",
                0o120000 => "symlink",
                0o160000 => "submodule",
                _ => "file",
            };
            let size = git.find_blob(e.id()).map(|b| b.size()).unwrap_or(0);
            json!({
                "type": kind, "name": name, "path": p, "sha": e.id().to_string(), "size": size,
                "url": format!("https://api.github.com/repos/{full}/contents/{p}?ref={spec}"),
            })
        };
        let list = |t: &git2::Tree<'_>, prefix: &str| -> Value {
            t.iter()
                .map(|e| {
                    let name = e.name().unwrap_or("").to_string();
                    let p = if prefix.is_empty() {
                        name.clone()
                    } else {
                        format!("{prefix}/{name}")
                    };
                    item(&name, &p, &e)
                })
                .collect()
        };
        if path.is_empty() {
            return ok(list(&tree, ""));
        }
        let entry = tree
            .get_path(std::path::Path::new(path))
            .map_err(|_| not_found())?;
        let name = path.rsplit('/').next().unwrap_or(path);
        match entry.filemode() {
            0o040000 => ok(list(&git.find_tree(entry.id())?, path)),
            0o160000 => ok(item(name, path, &entry)),
            mode => {
                let blob = git.find_blob(entry.id())?;
                let mut v = item(name, path, &entry);
                if mode == 0o120000 {
                    v["target"] = json!(String::from_utf8_lossy(blob.content()));
                    return ok(v);
                }
                if blob.size() > 1024 * 1024 {
                    // Like GitHub: 1–100 MB files come without their content.
                    v["encoding"] = json!("none");
                    v["content"] = json!("");
                    return ok(v);
                }
                // Like GitHub: base64 in lines of 60 characters.
                let b64 = base64::engine::general_purpose::STANDARD.encode(blob.content());
                let mut wrapped = String::new();
                for chunk in b64.as_bytes().chunks(60) {
                    wrapped.push_str(&String::from_utf8_lossy(chunk));
                    wrapped.push('\n');
                }
                v["encoding"] = json!("base64");
                v["content"] = json!(wrapped);
                ok(v)
            }
        }
    }

    fn post_tree(&mut self, q: &mut Q, full: &str) -> Res {
        let git = self.repo(full).repo();
        let base = match q.str("base_tree") {
            Some(s) => git2::Oid::from_str(s)
                .ok()
                .and_then(|o| git.find_tree(o).ok())
                .ok_or_else(|| fail(422, &format!("base_tree {s} is not a tree")))?,
            None => git.find_tree(git.treebuilder(None)?.write()?)?,
        };
        let items = q
            .body
            .get("tree")
            .and_then(Value::as_array)
            .ok_or_else(|| invalid("Tree", "tree", "missing_field", None))?;
        let mut update = git2::build::TreeUpdateBuilder::new();
        let mut notes = Vec::new();
        for item in items {
            let path = item.get("path").and_then(Value::as_str).unwrap_or("");
            if !valid_tree_path(path) {
                return Err(fail(
                    422,
                    &format!("tree.path {path:?} contains a malformed path component"),
                ));
            }
            let fmode = item
                .get("mode")
                .and_then(Value::as_str)
                .and_then(mode)
                .ok_or_else(|| fail(422, &format!("tree.mode for {path} is invalid")))?;
            match (item.get("sha"), item.get("content").and_then(Value::as_str)) {
                (_, Some(content)) => {
                    let oid = git.blob(content.as_bytes())?;
                    update.upsert(path, oid, fmode);
                }
                (Some(Value::String(sha)), None) => {
                    let oid = git2::Oid::from_str(sha)
                        .ok()
                        .filter(|o| git.find_object(*o, None).is_ok())
                        .ok_or_else(|| fail(422, &format!("tree.sha {sha} is not a valid blob")))?;
                    update.upsert(path, oid, fmode);
                }
                (Some(Value::Null), None) => {
                    if base.get_path(std::path::Path::new(path)).is_err() {
                        return Err(fail(
                            422,
                            &format!(
                                "tree.path {path:?} is not in base_tree, so it cannot be deleted"
                            ),
                        ));
                    }
                    update.remove(path);
                    notes.push(format!("deletes {path}"));
                }
                _ => {
                    return Err(fail(422, &format!("tree item {path} needs sha or content")));
                }
            }
        }
        let oid = update.create_updated(&git, &base)?;
        for n in notes {
            q.note(&n);
        }
        created(json!({
            "sha": oid.to_string(),
            "url": format!("https://api.github.com/repos/{full}/git/trees/{oid}"),
            "truncated": false,
        }))
    }

    fn post_commit(&mut self, q: &mut Q, full: &str, token: &TokenKind) -> Res {
        let default_time = self.now_time();
        let git = self.repo(full).repo();
        let message = q
            .str("message")
            .ok_or_else(|| fail(422, "Invalid request.\n\n\"message\" wasn't supplied."))?
            .to_string();
        let tree = q
            .str("tree")
            .and_then(|s| git2::Oid::from_str(s).ok())
            .and_then(|o| git.find_tree(o).ok())
            .ok_or_else(|| fail(422, "Tree SHA does not exist"))?;
        let mut parents = Vec::new();
        for p in q
            .body
            .get("parents")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let c = p
                .as_str()
                .and_then(|s| git2::Oid::from_str(s).ok())
                .and_then(|o| git.find_commit(o).ok())
                .ok_or_else(|| fail(422, "Parent SHA does not exist or is not a commit object"))?;
            parents.push(c);
        }
        let login = token.login();
        let person = |key: &str| -> Result<git2::Signature<'static>, Reply> {
            let v = q.body.get(key);
            let field = |f: &str| v.and_then(|v| v.get(f)).and_then(Value::as_str);
            let name = field("name").unwrap_or(login);
            let email = field("email")
                .map(String::from)
                .unwrap_or_else(|| format!("{}+{login}@users.noreply.github.com", user_id(login)));
            let time = match field("date") {
                Some(d) => chrono::DateTime::parse_from_rfc3339(d)
                    .map(|d| git2::Time::new(d.timestamp(), 0))
                    .map_err(|_| fail(422, &format!("{key}.date {d:?} is not a valid date")))?,
                None => default_time,
            };
            Ok(git2::Signature::new(name, &email, &time)?)
        };
        let author = person("author")?;
        let committer = if q.body.get("committer").is_some() {
            person("committer")?
        } else {
            author.clone()
        };
        let refs: Vec<&git2::Commit<'_>> = parents.iter().collect();
        let oid = git.commit(None, &author, &committer, &message, &tree, &refs)?;
        let c = git.find_commit(oid)?;
        q.note(&format!("commit {oid} by {}", author.name().unwrap_or("")));
        created(commit_json(full, &c))
    }

    fn patch_ref(&mut self, q: &mut Q, full: &str, name: &str) -> Res {
        let git = self.repo(full).repo();
        let old = git
            .find_reference(name)
            .ok()
            .and_then(|r| r.target())
            .ok_or_else(|| fail(422, "Reference does not exist"))?;
        let new = q
            .str("sha")
            .and_then(|s| git2::Oid::from_str(s).ok())
            .filter(|o| git.find_commit(*o).is_ok())
            .ok_or_else(|| fail(422, "Object does not exist"))?;
        let force = q
            .body
            .get("force")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        let ff = new == old || git.graph_descendant_of(new, old).unwrap_or(false);
        q.note(&format!(
            "{name} force={force} fast_forward={ff} old={old} new={new}"
        ));
        if !ff && !force {
            return Err(fail(422, "Update is not a fast forward"));
        }
        git.reference(name, new, true, "fake: update ref")?;
        ok(ref_json(full, name, new))
    }

    fn compare(&self, full: &str, spec: &str) -> Res {
        let (base, head) = spec.split_once("...").ok_or_else(not_found)?;
        let git = self.repo(full).repo();
        let b = resolve(&git, base).ok_or_else(not_found)?;
        let h = resolve(&git, head).ok_or_else(not_found)?;
        let (ahead, behind) = git.graph_ahead_behind(h, b)?;
        let status = match (ahead, behind) {
            (0, 0) => "identical",
            (_, 0) => "ahead",
            (0, _) => "behind",
            _ => "diverged",
        };
        let mut walk = git.revwalk()?;
        walk.push(h)?;
        walk.hide(b)?;
        walk.set_sorting(git2::Sort::TOPOLOGICAL | git2::Sort::REVERSE)?;
        let mut commits = Vec::new();
        for oid in walk {
            let c = git.find_commit(oid?)?;
            commits.push(json!({
                "sha": c.id().to_string(),
                "commit": {
                    "message": c.message().unwrap_or(""),
                    "author": sig_json(&c.author()),
                    "committer": sig_json(&c.committer()),
                },
                "parents": c.parent_ids().map(|p| json!({"sha": p.to_string()})).collect::<Vec<_>>(),
            }));
        }
        let merge_base = git.merge_base(b, h).ok();
        let mut files = Vec::new();
        if let Some(mb) = merge_base {
            let old = git.find_commit(mb)?.tree()?;
            let new = git.find_commit(h)?.tree()?;
            let diff = git.diff_tree_to_tree(Some(&old), Some(&new), None)?;
            for d in diff.deltas() {
                let status = match d.status() {
                    git2::Delta::Added => "added",
                    git2::Delta::Deleted => "removed",
                    git2::Delta::Renamed => "renamed",
                    _ => "modified",
                };
                let path = d.new_file().path().or(d.old_file().path());
                files.push(
                    json!({"filename": path.map(|p| p.display().to_string()), "status": status}),
                );
            }
        }
        ok(json!({
            "url": format!("https://api.github.com/repos/{full}/compare/{spec}"),
            "status": status,
            "ahead_by": ahead,
            "behind_by": behind,
            "total_commits": commits.len(),
            "merge_base_commit": merge_base.map(|m| json!({"sha": m.to_string()})),
            "commits": commits,
            "files": files,
        }))
    }

    fn post_pull(&mut self, q: &mut Q, full: &str, token: &TokenKind) -> Res {
        let created_at = self.now();
        let r = self.repo(full);
        let title = q
            .str("title")
            .ok_or_else(|| invalid("PullRequest", "title", "missing_field", None))?
            .to_string();
        let head_arg = q
            .str("head")
            .ok_or_else(|| invalid("PullRequest", "head", "missing_field", None))?
            .to_string();
        let base = q.str("base").unwrap_or(&r.default_branch).to_string();
        let (head_owner, head) = match head_arg.split_once(':') {
            Some((o, b)) => (o.to_string(), b.to_string()),
            None => (r.owner().to_string(), head_arg.clone()),
        };
        let name = full.split('/').nth(1).unwrap_or("");
        let head_full = self
            .key(&format!("{head_owner}/{name}"))
            .ok_or_else(|| invalid("PullRequest", "head", "invalid", None))?;
        let head_oid = head_of(&self.repos[&head_full].repo(), &head)
            .ok_or_else(|| invalid("PullRequest", "head", "invalid", None))?;
        let git = r.repo();
        let base_oid =
            head_of(&git, &base).ok_or_else(|| invalid("PullRequest", "base", "invalid", None))?;
        if r.pulls.iter().any(|p| {
            p.state == "open" && p.head == head && p.head_repo.eq_ignore_ascii_case(&head_full)
        }) {
            return Err(invalid(
                "PullRequest",
                "head",
                "custom",
                Some(&format!(
                    "A pull request already exists for {head_owner}:{head}."
                )),
            ));
        }
        if head_full.eq_ignore_ascii_case(full) {
            let (ahead, _) = git.graph_ahead_behind(head_oid, base_oid)?;
            if ahead == 0 {
                return Err(invalid(
                    "PullRequest",
                    "head",
                    "custom",
                    Some(&format!("No commits between {base} and {head}")),
                ));
            }
        }
        let number = r.next_number();
        let p = Pull {
            number,
            title,
            body: q.str("body").unwrap_or("").to_string(),
            head,
            head_repo: head_full,
            base,
            draft: q
                .body
                .get("draft")
                .and_then(Value::as_bool)
                .unwrap_or(false),
            author: token.login().into(),
            labels: Vec::new(),
            state: "open".into(),
            comments: Vec::new(),
            events: Vec::new(),
            created_at,
        };
        q.note(&format!(
            "pull #{number} created from {} into {}",
            p.head, p.base
        ));
        self.repo_mut(full).pulls.push(p);
        let r = self.repo(full);
        created(pull_json(r, r.pull(number).ok_or_else(not_found)?))
    }

    fn patch_pull(&mut self, q: &mut Q, full: &str, token: &TokenKind, n: u64) -> Res {
        let lvl = self.level_of(full, token);
        let login = token.login().to_string();
        let r = self.repo_mut(full);
        let p = r
            .pulls
            .iter_mut()
            .find(|p| p.number == n)
            .ok_or_else(not_found)?;
        let own = p.author.eq_ignore_ascii_case(&login);
        if !own && lvl < level("write") {
            return Err(fail(403, "Must have admin rights to Repository."));
        }
        let mut changed = Vec::new();
        if let Some(t) = q.str("title") {
            p.title = t.into();
            changed.push("title");
        }
        if let Some(b) = q.str("body") {
            p.body = b.into();
            changed.push("body");
        }
        if let Some(s) = q.str("state") {
            if s != "open" && s != "closed" {
                return Err(invalid("PullRequest", "state", "invalid", None));
            }
            p.state = s.into();
            changed.push("state");
        }
        if let Some(b) = q.str("base") {
            p.base = b.into();
            changed.push("base");
        }
        let whose = if own {
            "its author".to_string()
        } else {
            format!("NOT ITS AUTHOR (pull by {})", p.author)
        };
        let note = format!("pull #{n} {} changed by {whose}", changed.join(", "));
        q.note(&note);
        let r = self.repo(full);
        ok(pull_json(r, r.pull(n).ok_or_else(not_found)?))
    }
}

/// Create the label (grey, no description) when the repository lacks it; the name as
/// the repository spells it.
fn ensure_label(r: &mut RepoState, name: &str) -> String {
    if let Some(l) = r.label(name) {
        return l.name.clone();
    }
    r.labels.push(Label {
        name: name.into(),
        color: "ededed".into(),
        description: None,
    });
    name.into()
}

/// A commit writing `files` on top of `parent` (no ref moved).
fn commit_files(
    git: &git2::Repository,
    parent: Option<git2::Oid>,
    files: &[(&str, &[u8])],
    sig: &git2::Signature<'_>,
    message: &str,
) -> Result<git2::Oid, git2::Error> {
    let parent = parent.map(|p| git.find_commit(p)).transpose()?;
    let base = match &parent {
        Some(p) => p.tree()?,
        None => git.find_tree(git.treebuilder(None)?.write()?)?,
    };
    let mut update = git2::build::TreeUpdateBuilder::new();
    for (path, content) in files {
        assert!(valid_tree_path(path), "bad path {path:?}");
        update.upsert(*path, git.blob(content)?, git2::FileMode::Blob);
    }
    let tree = git.find_tree(update.create_updated(git, &base)?)?;
    let parents: Vec<&git2::Commit<'_>> = parent.iter().collect();
    git.commit(None, sig, sig, message, &tree, &parents)
}

fn head_of(git: &git2::Repository, branch: &str) -> Option<git2::Oid> {
    git.find_reference(&format!("refs/heads/{branch}"))
        .ok()?
        .target()
}

/// A branch, tag, `refs/…` name or commit SHA, as GitHub's `ref` parameters take them.
fn resolve(git: &git2::Repository, spec: &str) -> Option<git2::Oid> {
    for name in [
        format!("refs/heads/{spec}"),
        format!("refs/tags/{spec}"),
        spec.to_string(),
    ] {
        if let Ok(r) = git.find_reference(&name)
            && let Ok(c) = r.peel_to_commit()
        {
            return Some(c.id());
        }
    }
    if spec.len() >= 7 && spec.chars().all(|c| c.is_ascii_hexdigit()) {
        return git
            .revparse_single(spec)
            .ok()
            .and_then(|o| o.peel_to_commit().ok())
            .map(|c| c.id());
    }
    None
}

fn ref_json(full: &str, name: &str, sha: git2::Oid) -> Value {
    json!({
        "ref": name,
        "node_id": format!("REF_{}", user_id(name)),
        "url": format!("https://api.github.com/repos/{full}/git/{name}"),
        "object": {
            "sha": sha.to_string(),
            "type": "commit",
            "url": format!("https://api.github.com/repos/{full}/git/commits/{sha}"),
        },
    })
}

fn commit_json(full: &str, c: &git2::Commit<'_>) -> Value {
    let sha = c.id().to_string();
    let tree = c.tree_id();
    json!({
        "sha": sha,
        "node_id": format!("C_{}", user_id(&sha)),
        "url": format!("https://api.github.com/repos/{full}/git/commits/{sha}"),
        "html_url": format!("https://github.com/{full}/commit/{sha}"),
        "author": sig_json(&c.author()),
        "committer": sig_json(&c.committer()),
        "message": c.message().unwrap_or(""),
        "tree": {"sha": tree.to_string(), "url": format!("https://api.github.com/repos/{full}/git/trees/{tree}")},
        "parents": c.parent_ids().map(|p| json!({
            "sha": p.to_string(),
            "url": format!("https://api.github.com/repos/{full}/git/commits/{p}"),
        })).collect::<Vec<_>>(),
        "verification": {"verified": false, "reason": "unsigned", "signature": null, "payload": null},
    })
}

fn comment_json(full: &str, n: u64, c: &Comment) -> Value {
    json!({
        "id": c.id,
        "node_id": format!("IC_{}", c.id),
        "url": format!("https://api.github.com/repos/{full}/issues/comments/{}", c.id),
        "html_url": format!("https://github.com/{full}/issues/{n}#issuecomment-{}", c.id),
        "issue_url": format!("https://api.github.com/repos/{full}/issues/{n}"),
        "user": user_json(&c.author),
        "created_at": c.created_at,
        "updated_at": c.created_at,
        "author_association": c.author_association,
        "body": c.body,
        "reactions": {"total_count": 0},
        "performed_via_github_app": null,
    })
}

fn pull_json(r: &RepoState, p: &Pull) -> Value {
    let full = &r.full_name;
    let git = r.repo();
    let head_sha = if p.head_repo.eq_ignore_ascii_case(full) {
        head_of(&git, &p.head).map(|o| o.to_string())
    } else {
        None
    };
    let head_owner = p.head_repo.split('/').next().unwrap_or("");
    let labels: Vec<Value> = p
        .labels
        .iter()
        .filter_map(|l| r.label(l))
        .map(|l| label_json(full, l))
        .collect();
    json!({
        "url": format!("https://api.github.com/repos/{full}/pulls/{}", p.number),
        "id": user_id(&format!("pull:{full}#{}", p.number)),
        "number": p.number,
        "html_url": format!("https://github.com/{full}/pull/{}", p.number),
        "state": p.state,
        "locked": false,
        "title": p.title,
        "user": user_json(&p.author),
        "body": p.body,
        "labels": labels,
        "draft": p.draft,
        "merged": false,
        "created_at": p.created_at,
        "updated_at": p.created_at,
        "head": {
            "label": format!("{head_owner}:{}", p.head),
            "ref": p.head,
            "sha": head_sha,
            "user": user_json(head_owner),
            "repo": {"full_name": p.head_repo},
        },
        "base": {
            "label": format!("{}:{}", r.owner(), p.base),
            "ref": p.base,
            "sha": head_of(&git, &p.base).map(|o| o.to_string()),
            "user": user_json(r.owner()),
            "repo": {"full_name": full},
        },
    })
}

// ---------------------------------------------------------------------------------
// The server
// ---------------------------------------------------------------------------------

/// The one responder behind the catch-all mock.
pub struct FakeGithubResponder(pub Arc<Mutex<World>>);

impl Respond for FakeGithubResponder {
    fn respond(&self, r: &Request) -> ResponseTemplate {
        // A test holding `world()` while the binary runs would hang both: wait a
        // while, then say so.
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut world = loop {
            match self.0.try_lock() {
                Ok(g) => break g,
                Err(TryLockError::Poisoned(p)) => break p.into_inner(),
                Err(TryLockError::WouldBlock) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(2));
                }
                Err(TryLockError::WouldBlock) => {
                    return ResponseTemplate::new(418).set_body_json(json!({
                        "message": "fake GitHub: the test holds FakeGithub::world() while the binary runs; drop the guard first"
                    }));
                }
            }
        };
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| world.handle(r))) {
            Ok(t) => t,
            Err(e) => {
                let why = e
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                eprintln!("fake GitHub panicked on {} {}: {why}", r.method, r.url);
                // Not a 5xx, so the client does not retry a bug in the fake.
                ResponseTemplate::new(418)
                    .set_body_json(json!({"message": format!("fake GitHub panicked: {why}")}))
            }
        }
    }
}

/// A fake GitHub on its own runtime.
pub struct FakeGithub {
    pub http: HttpMock,
    pub state: Arc<Mutex<World>>,
}

impl FakeGithub {
    pub fn start() -> Self {
        let http = HttpMock::start();
        let state = Arc::new(Mutex::new(World::new(http.server.uri())));
        http.mount(Mock::given(path_regex(".*")).respond_with(FakeGithubResponder(state.clone())));
        Self { http, state }
    }

    /// The API URL (`GITHUB_API_URL`).
    pub fn url(&self) -> String {
        self.http.server.uri()
    }

    /// The environment that points the binary here with `token`.
    pub fn env(&self, token: &str) -> Vec<(&'static str, String)> {
        vec![
            ("GITHUB_TOKEN", token.to_string()),
            ("GITHUB_API_URL", self.url()),
        ]
    }

    /// The state; drop the guard before running the binary.
    pub fn world(&self) -> MutexGuard<'_, World> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn bare_path(&self, repo: &str) -> PathBuf {
        self.world().bare_path(repo)
    }

    pub fn writes(&self, repo: &str) -> Vec<Write> {
        self.world().writes(repo)
    }

    /// Every request received (GETs too), as wiremock saw them.
    pub fn requests(&self) -> Vec<Request> {
        self.http.requests()
    }

    /// The binary in `t`, with `token` and this API URL.
    pub fn cmd(&self, t: &TestContext, token: &str) -> assert_cmd::Command {
        let mut cmd = t.cmd();
        for (k, v) in self.env(token) {
            cmd.env(k, v);
        }
        cmd
    }

    /// Run the binary in `t` with `token`.
    pub fn run(&self, t: &TestContext, token: &str, args: &[&str]) -> Output {
        self.cmd(t, token).args(args).output().unwrap()
    }
}

// ---------------------------------------------------------------------------------
// Tests: the real binary against the fake
// ---------------------------------------------------------------------------------

/// A maintainer's token (write permission).
pub(super) const MAINT: &str = "ghp_fakemaintainer00000000000000000000001";
/// The bot's token (a user token with write permission).
pub(super) const BOT: &str = "ghp_fakeautotriagebot000000000000000000002";
/// An Action's `GITHUB_TOKEN`.
pub(super) const ACTION: &str = "ghs_fakeinstallation0000000000000000000003";

const LIB: &str = "pub fn add(a: i32, b: i32) -> i32 {\n    a - b\n}\n";
const FIX: &str = "diff --git a/src/lib.rs b/src/lib.rs\n--- a/src/lib.rs\n+++ b/src/lib.rs\n@@ -1,3 +1,3 @@\n pub fn add(a: i32, b: i32) -> i32 {\n-    a - b\n+    a + b\n }\n";

/// `o/r` with `src/lib.rs` on `main`, a maintainer, the bot (both write), an Action
/// token and a stranger who may only read.
pub(super) fn fake() -> FakeGithub {
    let gh = FakeGithub::start();
    let mut w = gh.world();
    w.add_user_token(MAINT, "maint");
    w.add_user_token(BOT, "autotriage-bot");
    w.add_installation_token(ACTION, "github-actions[bot]");
    w.add_repo(
        "o/r",
        "main",
        &[("src/lib.rs", LIB), ("README.md", "# r\n")],
    );
    w.set_permission("o/r", "maint", "write");
    w.set_permission("o/r", "autotriage-bot", "write");
    drop(w);
    gh
}

/// Import the example history (renamed to `o/r`), so triage knows the kinds.
pub(super) fn import_history(t: &TestContext) {
    let ex = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/issues");
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

#[test]
fn triage_reads_an_issue_with_three_pages_of_comments_and_its_author() {
    let gh = fake();
    {
        let mut w = gh.world();
        w.add_issue(
            "o/r",
            7,
            "Crash when saving",
            "It panics on save.",
            "reporter",
            "NONE",
            &["bug"],
        );
        for i in 0..250 {
            let who = if i % 2 == 0 { "reporter" } else { "maint" };
            w.add_comment("o/r", 7, who, &format!("comment {i}"));
        }
    }
    let t = TestContext::new();
    let o = gh.run(
        &t,
        MAINT,
        &["triage", "o/r#7", "--from", "github", "--json"],
    );
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let v = json(&o);
    assert_eq!(v["ref"], "o/r#7");
    assert_eq!(v["title"], "Crash when saving");
    let run = t
        .path()
        .join(".autotriage/runs")
        .join(v["run_id"].as_str().unwrap());
    let stored: Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("issue.json")).unwrap()).unwrap();
    assert_eq!(stored["author"], "reporter");
    assert_eq!(stored["author_association"], "NONE");
    assert_eq!(stored["labels"], json!(["bug"]));
    let comments = stored["comments"].as_array().unwrap();
    assert_eq!(comments.len(), 250, "all three pages");
    assert_eq!(comments[0]["body"], "comment 0");
    assert_eq!(comments[249]["body"], "comment 249");
    assert_eq!(comments[1]["author"], "maint");
    assert_eq!(comments[1]["author_association"], "COLLABORATOR");
    let pages: Vec<String> = gh
        .requests()
        .iter()
        .filter(|r| r.url.path() == "/repos/o/r/issues/7/comments")
        .map(|r| r.url.query().unwrap_or("").to_string())
        .collect();
    assert_eq!(
        pages,
        vec!["per_page=100", "per_page=100&page=2", "per_page=100&page=3"]
    );
    assert!(
        gh.world().log.is_empty(),
        "a triage without --apply writes nothing"
    );
}

#[test]
fn pr_on_github_commits_the_patch_on_a_branch_and_opens_one_draft_pr() {
    let gh = fake();
    let base = {
        let mut w = gh.world();
        w.add_issue(
            "o/r",
            3,
            "add() subtracts",
            "`add(2, 2)` returns 0.",
            "reporter",
            "NONE",
            &["bug"],
        );
        w.add_label("o/r", "autotriage");
        w.branch_head("o/r", "main").unwrap()
    };
    let t = TestContext::new();
    t.write("fix.diff", FIX);
    t.write(
        "autotriage.yaml",
        "github:\n  pr_labels: [autotriage, needs-review]\n",
    );
    let args = [
        "pr", "o/r#3", "--patch", "fix.diff", "--forge", "github", "--json",
    ];
    let o = gh.run(&t, BOT, &args);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let v = json(&o);
    assert_eq!(v["github"]["pr_status"], "created");
    assert_eq!(v["github"]["url"], "https://github.com/o/r/pull/4");
    assert_eq!(v["github"]["labels_added"], json!(["autotriage"]));
    assert_eq!(v["github"]["labels_skipped"], json!(["needs-review"]));
    let head = {
        let w = gh.world();
        let head = w
            .branch_head("o/r", "autotriage/issue-3")
            .expect("the branch");
        assert_eq!(v["github"]["published"]["commit"], head.as_str());
        // The commit, read from the bare repository.
        let git = w.repo("o/r").repo();
        let c = git
            .find_commit(git2::Oid::from_str(&head).unwrap())
            .unwrap();
        assert_eq!(
            c.parent_ids().collect::<Vec<_>>(),
            vec![git2::Oid::from_str(&base).unwrap()]
        );
        assert_eq!(c.author().name().unwrap(), "autotriage-bot");
        assert!(c.message().unwrap().starts_with("Fix #3: add() subtracts"));
        assert!(
            w.file_at("o/r", &head, "src/lib.rs")
                .unwrap()
                .contains("a + b")
        );
        assert_eq!(w.file_at("o/r", &head, "README.md").unwrap(), "# r\n");
        assert_eq!(w.file_at("o/r", "main", "src/lib.rs").unwrap(), LIB);
        // One draft PR by the bot, labelled, and one comment linking it.
        let r = w.repo("o/r");
        assert_eq!(r.pulls.len(), 1);
        let p = &r.pulls[0];
        assert_eq!(
            (p.number, p.head.as_str(), p.base.as_str(), p.draft),
            (4, "autotriage/issue-3", "main", true)
        );
        assert_eq!(p.author, "autotriage-bot");
        assert_eq!(p.labels, vec!["autotriage"]);
        assert!(p.body.contains("Fixes #3"), "{}", p.body);
        let comments = &w.issue("o/r", 3).comments;
        assert_eq!(comments.len(), 1);
        assert_eq!(comments[0].author, "autotriage-bot");
        assert!(comments[0].body.contains("https://github.com/o/r/pull/4"));
        assert!(
            w.writes("o/r")
                .iter()
                .all(|w| w.ok() && w.method != "PATCH"),
            "{:#?}",
            w.writes("o/r")
        );
        head
    };
    // The bare repository clones like any remote.
    let clone = tempfile::tempdir().unwrap();
    let git = git2::Repository::clone(gh.bare_path("o/r").to_str().unwrap(), clone.path()).unwrap();
    let remote = git
        .find_reference("refs/remotes/origin/autotriage/issue-3")
        .unwrap();
    assert_eq!(remote.target().unwrap().to_string(), head);
    assert_eq!(
        std::fs::read_to_string(clone.path().join("src/lib.rs")).unwrap(),
        LIB,
        "the checkout is main"
    );

    // Again: the same commit, the PR updated, nothing duplicated.
    let before = gh.world().log.len();
    let o = gh.run(&t, BOT, &args);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let v = json(&o);
    assert_eq!(v["github"]["published"]["status"], "unchanged");
    assert_eq!(v["github"]["pr_status"], "updated");
    assert_eq!(v["github"]["comment"], "unchanged");
    let w = gh.world();
    assert_eq!(w.branch_head("o/r", "autotriage/issue-3").unwrap(), head);
    assert_eq!(w.repo("o/r").pulls.len(), 1);
    assert_eq!(w.issue("o/r", 3).comments.len(), 1);
    let again: Vec<String> = w.log[before..]
        .iter()
        .filter(|w| !w.path.ends_with("/git/blobs") && !w.path.ends_with("/git/trees"))
        .map(|w| format!("{} {}", w.method, w.path))
        .collect();
    assert_eq!(again, vec!["PATCH /repos/o/r/pulls/4"]);
}

#[test]
fn triage_apply_leaves_a_strangers_comment_with_the_marker_alone() {
    // The attack: a stranger posts a comment carrying the bot's hidden marker, so the
    // bot "updates" it, and the repository shows the stranger's comment with the
    // bot's words (or the stranger's, later) under an authoritative edit.
    let gh = fake();
    let planted = {
        let mut w = gh.world();
        w.add_label("o/r", "bug");
        w.add_issue(
            "o/r",
            7,
            "Images missing from output after upgrade",
            "Since upgrading, images from `static/` are not copied to `dist/` anymore.",
            "reporter",
            "NONE",
            &[],
        );
        w.add_comment(
            "o/r",
            7,
            "stranger",
            "<!-- autotriage:triage -->\nMaintainers: the fix is at https://evil.example/patch",
        )
    };
    let t = TestContext::new();
    import_history(&t);
    let o = gh.run(
        &t,
        BOT,
        &["triage", "o/r#7", "--from", "github", "--apply", "--json"],
    );
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let w = gh.world();
    let c = w.comment("o/r", planted);
    assert_eq!(
        c.body,
        "<!-- autotriage:triage -->\nMaintainers: the fix is at https://evil.example/patch"
    );
    assert!(c.edited_by.is_empty(), "edited by {:?}", c.edited_by);
    assert!(
        !w.writes("o/r")
            .iter()
            .any(|x| x.method == "PATCH" && x.path.contains("/issues/comments/")),
        "{:#?}",
        w.writes("o/r")
    );
    let bot: Vec<&Comment> = w
        .issue("o/r", 7)
        .comments
        .iter()
        .filter(|c| c.author == "autotriage-bot")
        .collect();
    assert_eq!(bot.len(), 1, "the bot posted its own comment");
    assert!(bot[0].body.contains("<!-- autotriage:triage -->"));
}

#[test]
fn an_actions_token_applies_a_triage_as_its_bot() {
    let gh = fake();
    {
        let mut w = gh.world();
        w.add_label("o/r", "bug");
        w.add_issue(
            "o/r",
            7,
            "Images missing from output after upgrade",
            "Since upgrading, images from `static/` are not copied to `dist/` anymore.",
            "reporter",
            "NONE",
            &[],
        );
    }
    let t = TestContext::new();
    import_history(&t);
    // An installation token cannot ask who it is: without `github.bot_login` nothing
    // is written, and the message says how to set it.
    let o = gh.run(
        &t,
        ACTION,
        &["triage", "o/r#7", "--from", "github", "--apply", "--json"],
    );
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    assert!(stderr(&o).contains("github.bot_login"), "{}", stderr(&o));
    assert!(gh.world().writes("o/r").is_empty());
    t.write(
        "autotriage.yaml",
        "github:\n  bot_login: github-actions[bot]\n",
    );
    let o = gh.run(
        &t,
        ACTION,
        &["triage", "o/r#7", "--from", "github", "--apply", "--json"],
    );
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let v = json(&o);
    assert_eq!(v["applied"]["labels_added"], json!(["bug"]));
    assert_eq!(v["applied"]["comment"], "created");
    let w = gh.world();
    let issue = w.issue("o/r", 7);
    assert_eq!(issue.labels, vec!["bug"]);
    assert_eq!(issue.events.last().unwrap().actor, "github-actions[bot]");
    assert_eq!(issue.comments.len(), 1);
    assert_eq!(issue.comments[0].author, "github-actions[bot]");
    assert!(
        w.writes("o/r")
            .iter()
            .all(|x| x.actor == "github-actions[bot]" && x.ok())
    );
}

#[test]
fn a_pr_rerun_keeps_a_contributors_commit_on_the_branch() {
    let gh = fake();
    gh.world().add_issue(
        "o/r",
        3,
        "add() subtracts",
        "`add(2, 2)` returns 0.",
        "reporter",
        "NONE",
        &["bug"],
    );
    let t = TestContext::new();
    t.write("fix.diff", FIX);
    let args = [
        "pr", "o/r#3", "--patch", "fix.diff", "--forge", "github", "--json",
    ];
    assert_eq!(code(&gh.run(&t, BOT, &args)), 0);
    // A maintainer adds a test on the bot's branch.
    let theirs = gh.world().push_commit(
        "o/r",
        "autotriage/issue-3",
        None,
        &[(
            "tests/add.rs",
            "#[test]\nfn two() { assert_eq!(r::add(2, 2), 4); }\n",
        )],
        "maint",
        "Add a test",
    );
    let o = gh.run(&t, BOT, &args);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let w = gh.world();
    let head = w.branch_head("o/r", "autotriage/issue-3").unwrap();
    let git = w.repo("o/r").repo();
    let (h, c) = (
        git2::Oid::from_str(&head).unwrap(),
        git2::Oid::from_str(&theirs).unwrap(),
    );
    assert!(
        h == c || git.graph_descendant_of(h, c).unwrap(),
        "the contributor's commit is gone from the branch: {:#?}",
        w.writes("o/r")
    );
    assert!(
        !w.writes("o/r")
            .iter()
            .any(|x| x.ok() && x.detail.contains("fast_forward=false")),
        "{:#?}",
        w.writes("o/r")
    );
}

/// The fake's own semantics, over plain HTTP: tokens, label names in paths, pages,
/// ref updates.
#[test]
fn the_fake_answers_like_github() {
    let gh = fake();
    {
        let mut w = gh.world();
        for l in ["area/ui", "why?", "#1", "100%", "🐛 bug", "Bug"] {
            w.add_label("o/r", l);
        }
        w.page_cap = 2;
    }
    autotriage::tls::install();
    let client = reqwest::blocking::Client::new();
    let get = |token: &str, path: &str| {
        let r = client
            .get(format!("{}{path}", gh.url()))
            .header("authorization", format!("token {token}"))
            .send()
            .unwrap();
        let status = r.status().as_u16();
        let link = r
            .headers()
            .get("link")
            .map(|v| v.to_str().unwrap().to_string());
        (status, r.json::<Value>().unwrap_or(Value::Null), link)
    };
    let send = |method: &str, token: &str, path: &str, body: Value| {
        let r = client
            .request(method.parse().unwrap(), format!("{}{path}", gh.url()))
            .header("authorization", format!("Bearer {token}"))
            .json(&body)
            .send()
            .unwrap();
        (
            r.status().as_u16(),
            r.json::<Value>().unwrap_or(Value::Null),
        )
    };
    // Tokens.
    assert_eq!(get(MAINT, "/user").1["login"], "maint");
    let (s, v, _) = get(ACTION, "/user");
    assert_eq!(
        (s, v["message"].as_str()),
        (403, Some("Resource not accessible by integration"))
    );
    assert_eq!(get("nope", "/repos/o/r").0, 401);
    assert_eq!(get(MAINT, "/repos/o/missing/issues/1").0, 404);
    // Label names: decoded when encoded, lost when not.
    for (path, name) in [
        ("area%2Fui", "area/ui"),
        ("why%3F", "why?"),
        ("%231", "#1"),
        ("100%25", "100%"),
        ("%F0%9F%90%9B%20bug", "🐛 bug"),
        ("bug", "Bug"),
    ] {
        let (s, v, _) = get(MAINT, &format!("/repos/o/r/labels/{path}"));
        assert_eq!((s, v["name"].as_str()), (200, Some(name)), "{path}");
    }
    assert_eq!(get(MAINT, "/repos/o/r/labels/area/ui").0, 404);
    assert_eq!(
        get(MAINT, "/repos/o/r/labels/why?").0,
        404,
        "`?` starts the query"
    );
    // Pages follow per_page (capped here at 2) with Link headers.
    let (_, v, link) = get(MAINT, "/repos/o/r/labels?per_page=100");
    assert_eq!(v.as_array().unwrap().len(), 2);
    assert!(link.unwrap().contains("per_page=100&page=2>; rel=\"next\""));
    let (_, v, link) = get(MAINT, "/repos/o/r/labels?per_page=100&page=3");
    assert_eq!(v.as_array().unwrap().len(), 2);
    assert!(!link.unwrap().contains("rel=\"next\""));
    // A collaborator's permission; a bot's login is not a user's.
    assert_eq!(
        get(MAINT, "/repos/o/r/collaborators/maint/permission").1["permission"],
        "write"
    );
    assert_eq!(
        get(MAINT, "/repos/o/r/collaborators/someone/permission").1["permission"],
        "read"
    );
    assert_eq!(
        get(
            MAINT,
            "/repos/o/r/collaborators/github-actions%5Bbot%5D/permission"
        )
        .0,
        404
    );
    // Refs: no fast forward without force; the forced one is logged.
    let main = gh.world().branch_head("o/r", "main").unwrap();
    let side = gh
        .world()
        .push_commit("o/r", "side", Some(&main), &[("a", "1")], "maint", "a");
    let other = gh
        .world()
        .push_commit("o/r", "other", Some(&main), &[("b", "2")], "maint", "b");
    let (s, v) = send(
        "PATCH",
        MAINT,
        "/repos/o/r/git/refs/heads/side",
        json!({"sha": other}),
    );
    assert_eq!(
        (s, v["message"].as_str()),
        (422, Some("Update is not a fast forward"))
    );
    assert_eq!(gh.world().branch_head("o/r", "side").unwrap(), side);
    let (s, _) = send(
        "PATCH",
        MAINT,
        "/repos/o/r/git/refs/heads/side",
        json!({"sha": other, "force": true}),
    );
    assert_eq!(s, 200);
    assert_eq!(gh.world().branch_head("o/r", "side").unwrap(), other);
    let (s, v) = send(
        "POST",
        MAINT,
        "/repos/o/r/git/refs",
        json!({"ref": "refs/heads/side", "sha": main}),
    );
    assert_eq!(
        (s, v["message"].as_str()),
        (422, Some("Reference already exists"))
    );
    let (_, v, _) = get(MAINT, &format!("/repos/o/r/compare/{main}...other"));
    assert_eq!(
        (v["status"].as_str(), v["ahead_by"].as_u64()),
        (Some("ahead"), Some(1))
    );
    // A stranger can comment and cannot label; a label the repository lacks is made.
    gh.world().add_user_token("ghp_stranger", "stranger");
    gh.world()
        .add_issue("o/r", 1, "t", "b", "stranger", "NONE", &[]);
    let (s, _) = send(
        "POST",
        "ghp_stranger",
        "/repos/o/r/issues/1/comments",
        json!({"body": "hi"}),
    );
    assert_eq!(s, 201);
    let (s, _) = send(
        "POST",
        "ghp_stranger",
        "/repos/o/r/issues/1/labels",
        json!({"labels": ["bug"]}),
    );
    assert_eq!(s, 403);
    let (s, _) = send(
        "POST",
        MAINT,
        "/repos/o/r/issues/1/labels",
        json!({"labels": ["new one"]}),
    );
    assert_eq!(s, 200);
    let w = gh.world();
    assert_eq!(w.issue("o/r", 1).comments[0].author_association, "NONE");
    let log: Vec<(String, u16, String)> = w
        .writes("o/r")
        .iter()
        .map(|x| (x.method.clone(), x.status, x.detail.clone()))
        .collect();
    assert_eq!(log.len(), 6, "{log:#?}");
    assert!(
        log[1].2.contains("force=true fast_forward=false"),
        "{log:#?}"
    );
    assert!(
        log[5].2.contains("created label \"new one\" implicitly"),
        "{log:#?}"
    );
}
