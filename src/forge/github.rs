//! The GitHub forge, read side: issues with all their comments and issue lists for
//! batches (pull requests skipped), through reqwest, against `github.api_url` (GitHub
//! Enterprise and tests set it).
//!
//! Reads are retried (5xx, dropped connections, primary and secondary rate limits,
//! 429 with `Retry-After`), each wait capped by `retry.max_wait` and reported; 401,
//! 403 and 404 are explained. Writes (labels, comments, branches, PRs) come with the
//! `pr` stage.

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::{Batch, Forge, ForgeError};
use crate::issue::{Comment, Issue, IssueRef, IssueState, RepoId};

/// Filters for listing a repository's issues.
#[derive(Debug, Clone, Default)]
pub struct ListOptions {
    /// `open`, `closed` or `all`.
    pub state: Option<String>,
    /// Only issues with this label.
    pub label: Option<String>,
    /// Only issues updated since (ISO 8601).
    pub since: Option<String>,
    /// At most this many.
    pub limit: Option<usize>,
}

/// Reads issues from GitHub.
pub struct GithubForge {
    runtime: tokio::runtime::Runtime,
    /// Sends the token, GitHub's media type and API version with every request.
    http: reqwest::Client,
    api_url: String,
    max_wait: Duration,
    list: ListOptions,
    /// `trust.trigger_label`: who added it is checked.
    pub trigger_label: String,
    /// Told about waits (rate limits, retries), for stderr.
    pub on_wait: Box<dyn Fn(&str) + Send + Sync>,
    /// `github.bot_login`: our login when `GET /user` is refused.
    pub bot_login: Option<String>,
    /// Applied to every issue read, as prose.
    pub redactor: crate::redact::Redactor,
    identity: std::sync::Mutex<Option<String>>,
}

/// The REST client for a token: the token as a bearer (marked sensitive, so it is never
/// logged), GitHub's JSON media type and API version, a 60 s read timeout. Redirects
/// are followed; reqwest drops the token on a redirect to another host.
fn http_client(token: &str) -> Result<reqwest::Client, String> {
    use reqwest::header::{ACCEPT, AUTHORIZATION, HeaderMap, HeaderValue};
    let mut auth = HeaderValue::from_str(&format!("Bearer {}", token.trim())).map_err(|_| {
        "the GitHub token holds characters a header cannot carry\n  fix: set GITHUB_TOKEN to the token alone".to_string()
    })?;
    auth.set_sensitive(true);
    let mut headers = HeaderMap::new();
    headers.insert(AUTHORIZATION, auth);
    headers.insert(
        ACCEPT,
        HeaderValue::from_static("application/vnd.github+json"),
    );
    headers.insert(
        "x-github-api-version",
        HeaderValue::from_static("2022-11-28"),
    );
    crate::tls::install();
    reqwest::Client::builder()
        .default_headers(headers)
        .user_agent(concat!("autotriage/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(Duration::from_secs(30))
        .read_timeout(Duration::from_secs(60))
        .build()
        .map_err(|e| format!("cannot make an HTTP client: {e}"))
}

/// The last `X-RateLimit-Remaining` GitHub sent this process (-1: none yet), for
/// `serve`'s metrics.
pub static RATE_LIMIT_REMAINING: std::sync::atomic::AtomicI64 =
    std::sync::atomic::AtomicI64::new(-1);

/// The token: `GITHUB_TOKEN`, then `GH_TOKEN`, then `gh auth token`.
pub fn token() -> Option<String> {
    for var in ["GITHUB_TOKEN", "GH_TOKEN"] {
        if let Ok(t) = std::env::var(var)
            && !t.trim().is_empty()
        {
            return Some(t.trim().to_string());
        }
    }
    let out = Command::new("gh").args(["auth", "token"]).output().ok()?;
    let t = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (out.status.success() && !t.is_empty()).then_some(t)
}

fn http_fail(what: &str, status: u16, body: &str) -> ForgeError {
    let parsed = serde_json::from_str::<Value>(body).ok();
    let mut message = parsed
        .as_ref()
        .and_then(|v| v.get("message").and_then(Value::as_str).map(String::from))
        .unwrap_or_else(|| body.chars().take(200).collect());
    // A 422 says why in `errors[].message` ("A pull request already exists…").
    let details: Vec<String> = parsed
        .as_ref()
        .and_then(|v| v.get("errors").and_then(Value::as_array))
        .into_iter()
        .flatten()
        .filter_map(|e| {
            e.get("message")
                .and_then(Value::as_str)
                .map(String::from)
                .or_else(|| e.get("code").and_then(Value::as_str).map(String::from))
        })
        .collect();
    if !details.is_empty() {
        message = format!("{message} ({})", details.join("; "));
    }
    let fix = match status {
        401 => "the token was refused: check GITHUB_TOKEN / GH_TOKEN (or `gh auth login`)",
        403 => {
            "the token lacks a scope or permission for this (issues need `repo` for private repositories; writes need write access), or access is blocked"
        }
        404 => {
            "the repository or issue does not exist, or it is private and the token cannot see it"
        }
        422 => "GitHub refused the request as it stands; nothing else was changed by it",
        _ => "try again later",
    };
    ForgeError::Http {
        reference: what.to_string(),
        status,
        message: format!("GitHub answered HTTP {status}: {message}\n  fix: {fix}"),
    }
}

/// One path segment, percent-encoded: a label name such as `a/b?c` or `🐛 bug` stays
/// one segment of the request path.
pub fn segment(text: &str) -> String {
    /// Everything but RFC 3986's unreserved characters.
    const SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'.')
        .remove(b'_')
        .remove(b'~');
    percent_encoding::utf8_percent_encode(text, SEGMENT).to_string()
}

/// A repository path (`src/a b.rs`), each segment percent-encoded, the `/` kept.
pub fn path_segments(path: &str) -> String {
    path.split('/').map(segment).collect::<Vec<_>>().join("/")
}

impl GithubForge {
    /// A forge for `api_url` with the token from the environment.
    pub fn new(api_url: &str, max_wait_secs: u64, list: ListOptions) -> Result<Self, ForgeError> {
        let token = token().ok_or_else(|| ForgeError::Credentials {
            reference: api_url.to_string(),
            message:
                "no GitHub token\n  fix: export GITHUB_TOKEN (or GH_TOKEN), or run `gh auth login`"
                    .into(),
        })?;
        Self::with_token(api_url, token, max_wait_secs, list)
    }

    /// A forge for `api_url` acting with `token` (an App's installation token, say).
    pub fn with_token(
        api_url: &str,
        token: String,
        max_wait_secs: u64,
        list: ListOptions,
    ) -> Result<Self, ForgeError> {
        if let Ok(u) = reqwest::Url::parse(api_url)
            && (!u.username().is_empty() || u.password().is_some())
        {
            return Err(ForgeError::Unsupported {
                reference: "github.api_url".into(),
                message: "github.api_url holds a user name or password, which would replace the token and show in messages\n  fix: remove it from the URL; the token comes from GITHUB_TOKEN".into(),
            });
        }
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(|e| ForgeError::Unsupported {
                reference: api_url.into(),
                message: format!("cannot start the async runtime: {e}"),
            })?;
        let http = http_client(&token).map_err(|message| ForgeError::Unsupported {
            reference: api_url.into(),
            message,
        })?;
        if reqwest::Url::parse(api_url).is_err() {
            return Err(ForgeError::Unsupported {
                reference: api_url.into(),
                message: format!(
                    "bad github.api_url: {api_url} is not a URL\n  fix: set github.api_url to https://api.github.com or your GitHub Enterprise's https://HOST/api/v3"
                ),
            });
        }
        Ok(Self {
            runtime,
            http,
            api_url: api_url.trim_end_matches('/').to_string(),
            max_wait: Duration::from_secs(max_wait_secs),
            list,
            trigger_label: "autotriage:fix".into(),
            on_wait: Box::new(|_| {}),
            bot_login: None,
            redactor: crate::redact::Redactor::from_env::<&str>(&[]),
            identity: std::sync::Mutex::new(None),
        })
    }

    /// A forge for the configured GitHub (`github.*`, `trust.trigger_label`,
    /// `retry.max_wait`).
    pub fn from_config(
        config: &crate::config::Config,
        list: ListOptions,
    ) -> Result<Self, ForgeError> {
        let forge = Self::new(&config.github.api_url, config.retry.max_wait, list)?;
        Ok(forge.configured(config))
    }

    /// A forge for the configured GitHub acting with `token` (an App's installation
    /// token); `bot_login` is who that token writes as.
    pub fn from_config_with_token(
        config: &crate::config::Config,
        list: ListOptions,
        token: String,
        bot_login: &str,
    ) -> Result<Self, ForgeError> {
        let forge = Self::with_token(&config.github.api_url, token, config.retry.max_wait, list)?;
        let mut forge = forge.configured(config);
        forge.bot_login = Some(bot_login.to_string());
        Ok(forge)
    }

    fn configured(mut self, config: &crate::config::Config) -> Self {
        self.trigger_label = config.trust.trigger_label.clone();
        self.bot_login = config
            .github
            .bot_login
            .clone()
            .filter(|l| !l.trim().is_empty());
        self.redactor = crate::redact::Redactor::from_env(&config.redact.secret_vars);
        self
    }

    /// A path under the API URL, or an absolute URL GitHub gave (a `Link` header's next
    /// page, an `html_url`): the token goes with every request, so an absolute URL
    /// must be on the API URL's scheme, host and port.
    fn resolve(&self, what: &str, url: &str) -> Result<String, ForgeError> {
        if !url.starts_with("http") {
            return Ok(format!("{}{url}", self.api_url));
        }
        let origin = |u: &str| {
            reqwest::Url::parse(u).ok().map(|u| {
                (
                    u.scheme().to_string(),
                    u.host_str().map(str::to_string),
                    u.port_or_known_default(),
                )
            })
        };
        match (origin(url), origin(&self.api_url)) {
            (Some(a), Some(b)) if a == b => Ok(url.to_string()),
            _ => Err(ForgeError::Unsupported {
                reference: what.into(),
                message: format!(
                    "GitHub's answer pointed at {url}, outside github.api_url ({}); the token is not sent there\n  fix: check github.api_url, or the proxy in front of GitHub",
                    self.api_url
                ),
            }),
        }
    }

    /// GET a URL (absolute, or a path under the API URL), retrying what is worth
    /// retrying. Returns the JSON and the `Link: rel="next"` URL.
    pub(crate) fn get(&self, what: &str, url: &str) -> Result<(Value, Option<String>), ForgeError> {
        let url = self.resolve(what, url)?;
        let started = Instant::now();
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let result = self.runtime.block_on(async {
                let resp = self.http.get(url.as_str()).send().await?;
                let status = resp.status().as_u16();
                let headers = resp.headers().clone();
                let body = resp.text().await?;
                Ok::<_, reqwest::Error>((status, headers, body))
            });
            let wait = match &result {
                Ok((status, headers, body)) => {
                    let header = |n: &str| {
                        headers
                            .get(n)
                            .and_then(|v| v.to_str().ok())
                            .map(str::to_string)
                    };
                    let remaining =
                        header("x-ratelimit-remaining").and_then(|v| v.parse::<u64>().ok());
                    if let Some(r) = remaining {
                        RATE_LIMIT_REMAINING.store(r as i64, std::sync::atomic::Ordering::Relaxed);
                    }
                    let retry_after = header("retry-after").and_then(|v| v.parse::<f64>().ok());
                    let reset = header("x-ratelimit-reset").and_then(|v| v.parse::<i64>().ok());
                    match *status {
                        200..=299 => {
                            let next = header("link").and_then(|l| next_link(&l));
                            let v =
                                serde_json::from_str(body).map_err(|e| ForgeError::Malformed {
                                    location: url.clone(),
                                    message: format!("GitHub sent a body that is not JSON: {e}"),
                                })?;
                            return Ok((v, next));
                        }
                        429 | 403
                            if retry_after.is_some()
                                || remaining == Some(0)
                                || body.contains("secondary rate limit") =>
                        {
                            let until_reset =
                                reset.map(|r| (r - chrono::Utc::now().timestamp()).max(0) as f64);
                            let secs = retry_after
                                .or(until_reset.filter(|_| remaining == Some(0)))
                                .unwrap_or(60.0);
                            Some((
                                Duration::from_secs_f64(secs),
                                format!("GitHub rate limit (HTTP {status})"),
                            ))
                        }
                        500..=599 => Some((
                            Duration::from_millis(500 * u64::from(attempt)),
                            format!("GitHub HTTP {status}"),
                        )),
                        _ => return Err(http_fail(what, *status, body)),
                    }
                }
                Err(e) => Some((
                    Duration::from_millis(500 * u64::from(attempt)),
                    format!("connection problem: {e}"),
                )),
            };
            let Some((delay, why)) = wait else { continue };
            if attempt >= 6 || started.elapsed() + delay > self.max_wait {
                let message = format!(
                    "{why}; gave up after {attempt} attempts (retry.max_wait {} s)\n  fix: try again later",
                    self.max_wait.as_secs()
                );
                let reference = what.to_string();
                return Err(if result.is_err() {
                    ForgeError::Network { reference, message }
                } else {
                    ForgeError::Exhausted { reference, message }
                });
            }
            (self.on_wait)(&format!(
                "{why}: waiting {:.1} s before retrying {what}",
                delay.as_secs_f64()
            ));
            std::thread::sleep(delay);
        }
    }

    /// One issue with all its comments.
    pub fn issue(&self, repo: &RepoId, number: u64) -> Result<Issue, ForgeError> {
        let what = format!("{repo}#{number}");
        let (v, _) = self.get(
            &what,
            &format!("/repos/{}/{}/issues/{number}", repo.owner, repo.name),
        )?;
        if v.get("pull_request").is_some_and(|p| !p.is_null()) {
            return Err(ForgeError::Unsupported {
                reference: what,
                message: "this is a pull request, not an issue\n  fix: pass the issue the pull request addresses".into(),
            });
        }
        let mut issue = to_issue(repo, &v).ok_or_else(|| ForgeError::Malformed {
            location: what.clone(),
            message: "GitHub's issue lacks number or title".into(),
        })?;
        let mut url = Some(format!(
            "/repos/{}/{}/issues/{number}/comments?per_page=100",
            repo.owner, repo.name
        ));
        while let Some(u) = url {
            let (page, next) = self.get(&what, &u)?;
            issue
                .comments
                .extend(page.as_array().into_iter().flatten().map(to_comment));
            url = next;
        }
        issue.source = Some(format!(
            "{}/repos/{}/{}/issues/{number}",
            self.api_url, repo.owner, repo.name
        ));
        if issue
            .labels
            .iter()
            .any(|l| l.eq_ignore_ascii_case(&self.trigger_label))
        {
            issue.trigger_label_added_by = self.label_actor(repo, number)?;
        }
        // Secrets pasted into an issue never go further than this read.
        Ok(self.redactor.redact_issue(&issue))
    }

    /// Who last added the trigger label, and whether they can write to the repository
    /// (admin, maintain or write permission).
    fn label_actor(
        &self,
        repo: &RepoId,
        number: u64,
    ) -> Result<Option<crate::issue::LabelActor>, ForgeError> {
        let what = format!("{repo}#{number}");
        let mut login: Option<String> = None;
        let mut url = Some(format!(
            "/repos/{}/{}/issues/{number}/events?per_page=100",
            repo.owner, repo.name
        ));
        while let Some(u) = url {
            let (page, next) = self.get(&what, &u)?;
            for e in page.as_array().into_iter().flatten() {
                let labeled = e.get("event").and_then(Value::as_str) == Some("labeled");
                let this = e
                    .pointer("/label/name")
                    .and_then(Value::as_str)
                    .is_some_and(|n| n.eq_ignore_ascii_case(&self.trigger_label));
                if labeled && this {
                    login = e
                        .pointer("/actor/login")
                        .and_then(Value::as_str)
                        .map(String::from);
                }
            }
            url = next;
        }
        let Some(login) = login else { return Ok(None) };
        // Not a collaborator (404) means no write access.
        let permission = self
            .get(
                &what,
                &format!(
                    "/repos/{}/{}/collaborators/{}/permission",
                    repo.owner,
                    repo.name,
                    segment(&login)
                ),
            )
            .ok()
            .and_then(|(v, _)| {
                v.get("permission")
                    .and_then(Value::as_str)
                    .map(String::from)
            })
            .unwrap_or_default();
        Ok(Some(crate::issue::LabelActor {
            can_write: matches!(permission.as_str(), "admin" | "maintain" | "write"),
            login,
        }))
    }

    /// A login's permission on the repository, read live: `admin`, `maintain`, `write`,
    /// `triage`, `read`, or `none` (not a collaborator).
    pub fn permission(&self, repo: &RepoId, login: &str) -> Result<String, ForgeError> {
        let what = format!("{repo} permission of {login}");
        match self.get(
            &what,
            &format!(
                "/repos/{}/{}/collaborators/{}/permission",
                repo.owner,
                repo.name,
                segment(login)
            ),
        ) {
            Ok((v, _)) => Ok(v
                .get("permission")
                .and_then(Value::as_str)
                .unwrap_or("none")
                .to_string()),
            Err(ForgeError::Http { status: 404, .. }) => Ok("none".into()),
            Err(e) => Err(e),
        }
    }

    /// Labels a person (anyone but `us`) removed from the issue and did not add back:
    /// a later triage must not put them on again.
    pub fn removed_labels(
        &self,
        repo: &RepoId,
        number: u64,
        us: &str,
    ) -> Result<Vec<String>, ForgeError> {
        let what = format!("{repo}#{number}");
        let mut removed: Vec<String> = Vec::new();
        let mut url = Some(format!(
            "/repos/{}/{}/issues/{number}/events?per_page=100",
            repo.owner, repo.name
        ));
        while let Some(u) = url {
            let (page, next) = self.get(&what, &u)?;
            for e in page.as_array().into_iter().flatten() {
                let Some(name) = e.pointer("/label/name").and_then(Value::as_str) else {
                    continue;
                };
                let by_us = e
                    .pointer("/actor/login")
                    .and_then(Value::as_str)
                    .is_some_and(|a| a.eq_ignore_ascii_case(us));
                match e.get("event").and_then(Value::as_str) {
                    Some("unlabeled")
                        if !by_us && !removed.iter().any(|r| r.eq_ignore_ascii_case(name)) =>
                    {
                        removed.push(name.to_string());
                    }
                    Some("labeled") if !by_us => {
                        removed.retain(|r| !r.eq_ignore_ascii_case(name));
                    }
                    _ => {}
                }
            }
            url = next;
        }
        Ok(removed)
    }

    /// Add a reaction (`eyes`, `+1`, …) to an issue comment.
    pub fn react(&self, repo: &RepoId, comment_id: u64, content: &str) -> Result<(), ForgeError> {
        self.write(
            "POST",
            &format!("{repo} comment {comment_id}"),
            &format!(
                "/repos/{}/{}/issues/comments/{comment_id}/reactions",
                repo.owner, repo.name
            ),
            &serde_json::json!({ "content": content }),
        )
        .map(|_| ())
    }

    /// The repository's labels with their descriptions.
    pub fn labels(&self, repo: &RepoId) -> Result<Vec<(String, Option<String>)>, ForgeError> {
        let what = repo.to_string();
        let mut out = Vec::new();
        let mut url = Some(format!(
            "/repos/{}/{}/labels?per_page=100",
            repo.owner, repo.name
        ));
        while let Some(u) = url {
            let (page, next) = self.get(&what, &u)?;
            for l in page.as_array().into_iter().flatten() {
                if let Some(name) = l.get("name").and_then(Value::as_str) {
                    out.push((
                        name.to_string(),
                        l.get("description")
                            .and_then(Value::as_str)
                            .filter(|d| !d.is_empty())
                            .map(String::from),
                    ));
                }
            }
            url = next;
        }
        Ok(out)
    }

    /// A repository's issues (pull requests skipped), following pagination. Comments
    /// are not fetched for lists.
    pub fn issues(&self, repo: &RepoId) -> Result<Vec<Issue>, ForgeError> {
        let what = repo.to_string();
        let mut query = format!(
            "state={}&per_page=100",
            self.list.state.as_deref().unwrap_or("open")
        );
        if let Some(l) = &self.list.label {
            query.push_str(&format!("&labels={}", segment(l)));
        }
        if let Some(s) = &self.list.since {
            query.push_str(&format!("&since={}", segment(s)));
        }
        let mut url = Some(format!(
            "/repos/{}/{}/issues?{query}",
            repo.owner, repo.name
        ));
        let mut out = Vec::new();
        while let Some(u) = url {
            let (page, next) = self.get(&what, &u)?;
            for v in page.as_array().into_iter().flatten() {
                if v.get("pull_request").is_some_and(|p| !p.is_null()) {
                    continue;
                }
                if let Some(mut i) = to_issue(repo, v) {
                    // Where it came from: a later `fix` reads it live again for trust.
                    i.source = Some(format!(
                        "{}/repos/{}/{}/issues/{}",
                        self.api_url, repo.owner, repo.name, i.number
                    ));
                    out.push(self.redactor.redact_issue(&i));
                }
                if self.list.limit.is_some_and(|l| out.len() >= l) {
                    return Ok(out);
                }
            }
            url = next;
        }
        Ok(out)
    }
}

/// The `rel="next"` URL of a `Link` header.
pub fn next_link(link: &str) -> Option<String> {
    link.split(',')
        .find(|part| part.contains("rel=\"next\""))
        .and_then(|part| {
            let start = part.find('<')? + 1;
            let end = part.find('>')?;
            Some(part[start..end].to_string())
        })
}

fn to_comment(v: &Value) -> Comment {
    Comment {
        author: v
            .pointer("/user/login")
            .and_then(Value::as_str)
            .map(String::from),
        author_association: v
            .get("author_association")
            .and_then(Value::as_str)
            .map(String::from),
        body: v
            .get("body")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string(),
        created_at: v
            .get("created_at")
            .and_then(Value::as_str)
            .map(String::from),
    }
}

fn to_issue(repo: &RepoId, v: &Value) -> Option<Issue> {
    Some(Issue {
        repo: repo.to_string(),
        number: v.get("number")?.as_u64()?,
        title: v.get("title")?.as_str()?.to_string(),
        body: v
            .get("body")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string(),
        labels: v
            .get("labels")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|l| {
                l.get("name")
                    .and_then(Value::as_str)
                    .or_else(|| l.as_str())
                    .map(String::from)
            })
            .collect(),
        state: v
            .get("state")
            .and_then(Value::as_str)
            .and_then(IssueState::parse)
            .unwrap_or_default(),
        author: v
            .pointer("/user/login")
            .and_then(Value::as_str)
            .map(String::from),
        author_association: v
            .get("author_association")
            .and_then(Value::as_str)
            .map(String::from),
        created_at: v
            .get("created_at")
            .and_then(Value::as_str)
            .map(String::from),
        comments: Vec::new(),
        url: v.get("html_url").and_then(Value::as_str).map(String::from),
        source: None,
        reactions: v.pointer("/reactions/total_count").and_then(Value::as_u64),
        trigger_label_added_by: None,
        locked: v.get("locked").and_then(Value::as_bool).unwrap_or(false),
    })
}

/// What `triage --apply` did (or, with `--dry-run`, would do) on GitHub.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct Applied {
    /// Labels added (ones the issue already had are not re-added).
    pub labels_added: Vec<String>,
    /// Labels the triage chose that the repository lacks, not applied
    /// (`github.create_labels` is off).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub labels_skipped: Vec<String>,
    /// Labels created in the repository first (`github.create_labels: true`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub labels_created: Vec<String>,
    /// `created`, `updated`, `unchanged` or `none` (nothing to say).
    pub comment: String,
    /// The bot comment's web URL, when there is one.
    pub comment_url: Option<String>,
    /// True when nothing was written (`--dry-run`).
    pub dry_run: bool,
    /// API requests made.
    pub requests: u32,
    /// Why nothing was written (a closed or locked issue without `--force`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skipped: Option<String>,
}

/// Which of the labels we want to apply the repository has, and what to do with the
/// others: create them (`github.create_labels`) or skip them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LabelPlan {
    /// The labels to apply, spelled as the repository spells them.
    pub apply: Vec<String>,
    /// Labels to create first (only with `github.create_labels`).
    pub create: Vec<String>,
    /// Labels the repository lacks, skipped.
    pub skipped: Vec<String>,
}

impl GithubForge {
    pub(crate) fn write(
        &self,
        method: &str,
        what: &str,
        url: &str,
        body: &Value,
    ) -> Result<Value, ForgeError> {
        let url = self.resolve(what, url)?;
        // Writes are sent once: a failure is re-checked by the caller, never re-sent blindly.
        let result = self.runtime.block_on(async {
            let request = match method {
                "PATCH" => self.http.patch(url.as_str()),
                "DELETE" => self.http.delete(url.as_str()),
                _ => self.http.post(url.as_str()),
            };
            let resp = request.json(body).send().await?;
            let status = resp.status().as_u16();
            let text = resp.text().await?;
            Ok::<_, reqwest::Error>((status, text))
        });
        match result {
            Ok((200..=299, text)) => Ok(serde_json::from_str(&text).unwrap_or(Value::Null)),
            Ok((status, text)) => Err(http_fail(what, status, &text)),
            Err(e) => Err(ForgeError::Network {
                reference: what.into(),
                message: format!(
                    "{method} {url} failed: {e}\n  fix: run the command again; it checks what was written before writing"
                ),
            }),
        }
    }

    /// The login our token acts as: `GET /user`, or `github.bot_login` where that is
    /// refused (App installation tokens). Asked once per forge.
    pub fn identity(&self) -> Result<String, ForgeError> {
        let mut cached = match self.identity.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        if let Some(login) = cached.as_ref() {
            return Ok(login.clone());
        }
        let login = match self.get("GET /user", "/user") {
            Ok((v, _)) => v.get("login").and_then(Value::as_str).map(String::from),
            // A 401 is a bad token: say so rather than guessing an identity.
            Err(e @ ForgeError::Http { status: 401, .. }) => return Err(e),
            Err(ForgeError::Http { .. }) => None,
            Err(e) => return Err(e),
        };
        let login = login
            .filter(|l| !l.is_empty())
            .or_else(|| self.bot_login.clone())
            .ok_or_else(|| ForgeError::Credentials {
                reference: "GET /user".into(),
                message: "GitHub did not say which login this token acts as (App installation tokens, such as an Action's GITHUB_TOKEN, cannot ask), so autotriage cannot tell its own comments from other people's\n  fix: set `github.bot_login` in autotriage.yaml to the login the token writes as (an Action: `github-actions[bot]`; an App: `NAME[bot]`)".into(),
            })?;
        *cached = Some(login.clone());
        Ok(login)
    }

    /// The labels of `wanted` the repository has (spelled its way); the others are
    /// created when `create` is set, else skipped. One listing of the labels.
    pub fn plan_labels(
        &self,
        repo: &RepoId,
        wanted: &[String],
        create: bool,
    ) -> Result<LabelPlan, ForgeError> {
        let have = self.labels(repo)?;
        let mut plan = LabelPlan::default();
        for label in wanted {
            if plan.apply.iter().any(|l| l.eq_ignore_ascii_case(label)) {
                continue;
            }
            match have.iter().find(|(n, _)| n.eq_ignore_ascii_case(label)) {
                Some((name, _)) => plan.apply.push(name.clone()),
                None if create => {
                    plan.create.push(label.clone());
                    plan.apply.push(label.clone());
                }
                None => plan.skipped.push(label.clone()),
            }
        }
        Ok(plan)
    }

    /// Create the labels of a plan that are to be created.
    pub fn create_labels(&self, repo: &RepoId, names: &[String]) -> Result<u32, ForgeError> {
        let mut requests = 0;
        for name in names {
            self.write(
                "POST",
                &repo.to_string(),
                &format!("/repos/{}/{}/labels", repo.owner, repo.name),
                &serde_json::json!({"name": name, "color": "ededed", "description": "Added by autotriage"}),
            )?;
            requests += 1;
        }
        Ok(requests)
    }

    /// Write a triage to the issue: add its labels the issue lacks (only ones the
    /// repository has, unless `create_labels`), and create or update our one comment
    /// (found by `marker` *and* our login). Check-then-act throughout, so a re-run
    /// changes nothing that is already right.
    #[allow(clippy::too_many_arguments)]
    pub fn apply(
        &self,
        repo: &RepoId,
        number: u64,
        labels: &[String],
        comment: Option<&str>,
        marker: &str,
        dry_run: bool,
        create_labels: bool,
    ) -> Result<Applied, ForgeError> {
        let what = format!("{repo}#{number}");
        let base = format!("/repos/{}/{}/issues/{number}", repo.owner, repo.name);
        let mut applied = Applied {
            dry_run,
            ..Default::default()
        };
        // Who we are first: no write happens before we can tell our comment apart.
        if comment.is_some() {
            self.identity()?;
        }
        let (current, _) = self.get(&what, &base)?;
        applied.requests += 1;
        let have: Vec<String> = current
            .get("labels")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|l| l.get("name").and_then(Value::as_str).map(String::from))
            .collect();
        // Never the trigger label: applied with our token, it would make us the
        // trusted adder that lets `fix` act on the issue.
        let missing: Vec<String> = labels
            .iter()
            .filter(|l| !have.iter().any(|h| h.eq_ignore_ascii_case(l)))
            .filter(|l| !l.eq_ignore_ascii_case(&self.trigger_label))
            .cloned()
            .collect();
        if !missing.is_empty() {
            let plan = self.plan_labels(repo, &missing, create_labels)?;
            applied.requests += 1;
            applied.labels_skipped = plan.skipped;
            applied.labels_added = plan.apply;
            applied.labels_created = plan.create;
        }
        if !dry_run {
            applied.requests += self.create_labels(repo, &applied.labels_created)?;
            if !applied.labels_added.is_empty() {
                self.write(
                    "POST",
                    &what,
                    &format!("{base}/labels"),
                    &serde_json::json!({"labels": applied.labels_added}),
                )?;
                applied.requests += 1;
            }
        }
        let (state, url, requests) = self.upsert_comment(repo, number, comment, marker, dry_run)?;
        applied.comment = state;
        applied.comment_url = url;
        applied.requests += requests;
        Ok(applied)
    }

    /// Create or update our one comment carrying `marker` (nothing when `text` is
    /// `None`). Ours means written by our login *and* starting with the marker; a
    /// comment by anyone else is never edited, whatever it contains. Returns its state
    /// (`created`, `updated`, `unchanged`, `none`), its URL and the requests made.
    pub fn upsert_comment(
        &self,
        repo: &RepoId,
        number: u64,
        text: Option<&str>,
        marker: &str,
        dry_run: bool,
    ) -> Result<(String, Option<String>, u32), ForgeError> {
        let Some(text) = text else {
            return Ok(("none".into(), None, 0));
        };
        let me = self.identity()?;
        let what = format!("{repo}#{number}");
        let base = format!("/repos/{}/{}/issues/{number}", repo.owner, repo.name);
        let mut requests = 0;
        let mut existing: Option<(u64, String, Option<String>)> = None;
        let mut url = Some(format!("{base}/comments?per_page=100"));
        while let Some(u) = url {
            let (page, next) = self.get(&what, &u)?;
            requests += 1;
            for c in page.as_array().into_iter().flatten() {
                let body = c.get("body").and_then(Value::as_str).unwrap_or("");
                let author = c.pointer("/user/login").and_then(Value::as_str);
                let ours = author.is_some_and(|a| a.eq_ignore_ascii_case(&me))
                    && body.trim_start().starts_with(marker);
                if ours
                    && existing.is_none()
                    && let Some(id) = c.get("id").and_then(Value::as_u64)
                {
                    existing = Some((
                        id,
                        body.to_string(),
                        c.get("html_url").and_then(Value::as_str).map(String::from),
                    ));
                }
            }
            url = next;
        }
        let html = |v: &Value| v.get("html_url").and_then(Value::as_str).map(String::from);
        Ok(match existing {
            Some((_, body, url)) if body.trim() == text.trim() => {
                ("unchanged".into(), url, requests)
            }
            Some((id, _, url)) => {
                if dry_run {
                    ("updated".into(), url, requests)
                } else {
                    let v = self.write(
                        "PATCH",
                        &what,
                        &format!("/repos/{}/{}/issues/comments/{id}", repo.owner, repo.name),
                        &serde_json::json!({"body": text}),
                    )?;
                    ("updated".into(), html(&v).or(url), requests + 1)
                }
            }
            None => {
                if dry_run {
                    ("created".into(), None, requests)
                } else {
                    let v = self.write(
                        "POST",
                        &what,
                        &format!("{base}/comments"),
                        &serde_json::json!({"body": text}),
                    )?;
                    ("created".into(), html(&v), requests + 1)
                }
            }
        })
    }
}

impl Forge for GithubForge {
    fn read(&self, reference: &IssueRef) -> Result<Batch, ForgeError> {
        match reference {
            IssueRef::Remote { repo, number } => Ok(vec![Ok(self.issue(repo, *number)?)]),
            IssueRef::Repo(repo) => Ok(self.issues(repo)?.into_iter().map(Ok).collect()),
            other => Err(ForgeError::Unsupported {
                reference: other.to_string(),
                message: "the GitHub forge reads GitHub references".into(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_goes_only_to_the_api_urls_origin() {
        let forge = GithubForge::with_token(
            "https://ghe.example/api/v3",
            "t0ken".into(),
            0,
            ListOptions::default(),
        )
        .unwrap();
        assert_eq!(
            forge.resolve("x", "/repos/o/r").unwrap(),
            "https://ghe.example/api/v3/repos/o/r"
        );
        assert!(
            forge
                .resolve("x", "https://ghe.example/api/v3/repos/o/r/issues?page=2")
                .is_ok()
        );
        for elsewhere in [
            "https://evil.example/api/v3/repos/o/r/issues?page=2",
            "http://ghe.example/api/v3/repos/o/r/issues?page=2",
            "https://ghe.example:8443/api/v3/repos/o/r/issues?page=2",
            "https://ghe.example.evil.example/x",
        ] {
            let e = forge.resolve("x", elsewhere).unwrap_err().to_string();
            assert!(
                e.contains("the token is not sent there"),
                "{elsewhere}: {e}"
            );
        }
        let e = GithubForge::with_token(
            "https://user:pw@ghe.example/api/v3",
            "t0ken".into(),
            0,
            ListOptions::default(),
        )
        .err()
        .unwrap()
        .to_string();
        assert!(e.contains("holds a user name or password"), "{e}");
        assert!(!e.contains("pw"), "{e}");
    }

    #[test]
    fn link_header_next() {
        let l = r#"<https://api.github.com/repositories/1000/issues?per_page=3&page=2>; rel="next", <https://api.github.com/repositories/1000/issues?per_page=3&page=5>; rel="last""#;
        assert_eq!(
            next_link(l).as_deref(),
            Some("https://api.github.com/repositories/1000/issues?per_page=3&page=2")
        );
        assert_eq!(next_link(r#"<x>; rel="prev""#), None);
    }
}
