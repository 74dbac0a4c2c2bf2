//! From a GitHub event to the jobs it asks for. Pure: the payload is all it reads;
//! who may ask (a commenter's permission) is checked live when the job runs.

use globset::{Glob, GlobSet, GlobSetBuilder};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A job of the service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum JobSpec {
    /// Triage the issue and write back per `serve.apply`.
    Triage {
        /// `owner/name`.
        repo: String,
        /// The issue.
        number: u64,
    },
    /// Fix the issue (through the live trust gate, or the grant of `granted_by`).
    Fix {
        /// `owner/name`.
        repo: String,
        /// The issue.
        number: u64,
        /// Who asked with `/autotriage fix` (re-checked when the job runs).
        granted_by: Option<String>,
    },
    /// A `/autotriage triage|fix` comment: run it if the commenter may.
    Command {
        /// `owner/name`.
        repo: String,
        /// The issue.
        number: u64,
        /// `triage` or `fix`.
        command: String,
        /// Who commented.
        commenter: String,
        /// The comment (for the 👀 reaction).
        comment_id: u64,
        /// When it was written: later comments are not part of what was granted.
        #[serde(default)]
        at: Option<String>,
        /// SHA-256 of the body as it was then: an edit after the command voids
        /// the grant.
        #[serde(default)]
        body_sha256: Option<String>,
    },
    /// A person changed a label of an issue: a correction of our triage.
    Correction {
        /// `owner/name`.
        repo: String,
        /// The issue.
        number: u64,
        /// The label.
        label: String,
        /// Added (else removed).
        added: bool,
        /// Who.
        actor: String,
    },
    /// A pull request from one of our branches closed: record the outcome.
    Outcome {
        /// `owner/name`.
        repo: String,
        /// The pull request.
        pull: u64,
        /// Merged (else closed unmerged).
        merged: bool,
        /// Its head branch.
        branch: String,
    },
    /// A job written by another version (kept, never run).
    Unknown,
}

impl JobSpec {
    /// The job's kind, as stored.
    pub fn kind(&self) -> &'static str {
        match self {
            JobSpec::Triage { .. } => "triage",
            JobSpec::Fix { .. } => "fix",
            JobSpec::Command { .. } => "command",
            JobSpec::Correction { .. } => "correction",
            JobSpec::Outcome { .. } => "outcome",
            JobSpec::Unknown => "unknown",
        }
    }

    /// `owner/name#N`: jobs of one key never run at once.
    pub fn key(&self) -> String {
        match self {
            JobSpec::Triage { repo, number }
            | JobSpec::Fix { repo, number, .. }
            | JobSpec::Command { repo, number, .. }
            | JobSpec::Correction { repo, number, .. } => format!("{repo}#{number}"),
            // The outcome rewrites the fix record: it queues with the issue.
            JobSpec::Outcome {
                repo, pull, branch, ..
            } => match branch
                .strip_prefix("autotriage/issue-")
                .and_then(|r| r.split('-').next())
                .and_then(|n| n.parse::<u64>().ok())
            {
                Some(n) => format!("{repo}#{n}"),
                None => format!("{repo}#pull-{pull}"),
            },
            JobSpec::Unknown => "unknown".into(),
        }
    }
}

/// SHA-256 (hex) of an issue body, with line endings as `\n`.
pub fn body_digest(body: &str) -> String {
    hex::encode(<sha2::Sha256 as sha2::Digest>::digest(
        body.replace("\r\n", "\n").as_bytes(),
    ))
}

impl RouteSettings {
    /// Whether the repository of `key` (`owner/repo#N`, or `owner/repo`) is served.
    pub fn serves(&self, key: &str) -> bool {
        let repo = key.split('#').next().unwrap_or(key);
        self.repos.is_match(repo.to_lowercase())
    }
}

/// What an event asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Routed {
    /// `ping`: answered 200.
    Ping,
    /// Nothing to do, and why (answered 202, logged).
    Ignored(String),
    /// Jobs to queue.
    Jobs(Vec<JobSpec>),
}

/// What routing needs to know.
pub struct RouteSettings {
    repos: GlobSet,
    /// The label that asks for a fix.
    pub trigger_label: String,
    /// Our login: our own label changes and comments are not events to act on.
    pub bot_login: Option<String>,
}

impl RouteSettings {
    /// From `serve.repos` (glob patterns, matched case-insensitively).
    pub fn new(
        repos: &[String],
        trigger_label: &str,
        bot_login: Option<String>,
    ) -> Result<Self, String> {
        let mut b = GlobSetBuilder::new();
        for r in repos {
            b.add(
                globset::GlobBuilder::new(&r.to_lowercase())
                    .literal_separator(true)
                    .build()
                    .map_err(|e| format!("serve.repos: {r}: {e}"))?,
            );
        }
        let _ = Glob::new;
        Ok(Self {
            repos: b.build().map_err(|e| format!("serve.repos: {e}"))?,
            trigger_label: trigger_label.into(),
            bot_login,
        })
    }

    fn ours(&self, login: &str) -> bool {
        self.bot_login
            .as_deref()
            .is_some_and(|b| b.eq_ignore_ascii_case(login))
    }
}

/// The jobs `event` (the `X-GitHub-Event` header) with `payload` asks for.
pub fn route(event: &str, payload: &Value, s: &RouteSettings) -> Routed {
    if event == "ping" {
        return Routed::Ping;
    }
    // `full_name`, else `owner.login` / `name` (older and hand-made payloads).
    let built = match (
        payload["repository"]["owner"]["login"].as_str(),
        payload["repository"]["name"].as_str(),
    ) {
        (Some(o), Some(n)) => Some(format!("{o}/{n}")),
        _ => None,
    };
    let Some(repo) = payload["repository"]["full_name"]
        .as_str()
        .map(String::from)
        .or(built)
    else {
        return Routed::Ignored(format!("{event}: the payload names no repository"));
    };
    let repo = repo.as_str();
    if !s.repos.is_match(repo.to_lowercase()) {
        return Routed::Ignored(format!("{repo} is not in serve.repos"));
    }
    let repo = repo.to_string();
    let action = payload["action"].as_str().unwrap_or("");
    let sender = payload["sender"]["login"].as_str().unwrap_or("");
    match event {
        "issues" => {
            let Some(number) = payload["issue"]["number"].as_u64() else {
                return Routed::Ignored("issues: no issue number".into());
            };
            match action {
                "opened" | "reopened" | "edited" => {
                    Routed::Jobs(vec![JobSpec::Triage { repo, number }])
                }
                "labeled" | "unlabeled" => {
                    let label = payload["label"]["name"].as_str().unwrap_or("").to_string();
                    if s.ours(sender) {
                        return Routed::Ignored(format!("{action} by us"));
                    }
                    let mut jobs = vec![JobSpec::Correction {
                        repo: repo.clone(),
                        number,
                        label: label.clone(),
                        added: action == "labeled",
                        actor: sender.to_string(),
                    }];
                    if action == "labeled" && label.eq_ignore_ascii_case(&s.trigger_label) {
                        jobs.push(JobSpec::Fix {
                            repo,
                            number,
                            granted_by: None,
                        });
                    }
                    Routed::Jobs(jobs)
                }
                other => Routed::Ignored(format!("issues.{other} is not handled")),
            }
        }
        "issue_comment" => {
            if action != "created" {
                return Routed::Ignored(format!("issue_comment.{action} is not handled"));
            }
            if s.ours(sender) {
                return Routed::Ignored("our own comment".into());
            }
            if payload["issue"]["pull_request"].is_object() {
                return Routed::Ignored("a comment on a pull request, not an issue".into());
            }
            let body = payload["comment"]["body"].as_str().unwrap_or("");
            let command = body
                .lines()
                .map(str::trim)
                .find(|l| l.starts_with("/autotriage"))
                .and_then(|l| l.split_whitespace().nth(1))
                .filter(|c| matches!(*c, "triage" | "fix"));
            let (Some(command), Some(number), Some(comment_id)) = (
                command,
                payload["issue"]["number"].as_u64(),
                payload["comment"]["id"].as_u64(),
            ) else {
                return Routed::Ignored("a comment without an /autotriage command".into());
            };
            Routed::Jobs(vec![JobSpec::Command {
                repo,
                number,
                command: command.into(),
                commenter: sender.into(),
                comment_id,
                at: payload["comment"]["created_at"].as_str().map(String::from),
                body_sha256: payload["issue"]["body"].as_str().map(body_digest),
            }])
        }
        "pull_request" => {
            if action != "closed" {
                return Routed::Ignored(format!("pull_request.{action} is not handled"));
            }
            let pr = &payload["pull_request"];
            let branch = pr["head"]["ref"].as_str().unwrap_or("");
            let head_repo = pr["head"]["repo"]["full_name"].as_str().unwrap_or("");
            if !branch.starts_with("autotriage/") {
                return Routed::Ignored("not one of our branches".into());
            }
            // A fork can name its branch like ours: only a branch in this repository is.
            if !head_repo.eq_ignore_ascii_case(&repo) {
                return Routed::Ignored(format!(
                    "{branch} is a branch of {head_repo}, not of {repo}"
                ));
            }
            let Some(pull) = pr["number"].as_u64() else {
                return Routed::Ignored("pull_request: no number".into());
            };
            Routed::Jobs(vec![JobSpec::Outcome {
                repo,
                pull,
                merged: pr["merged"].as_bool().unwrap_or(false),
                branch: branch.into(),
            }])
        }
        other => Routed::Ignored(format!("{other} events are not handled")),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn events_become_jobs_only_for_our_repositories_and_branches() {
        let s = RouteSettings::new(&["acme/*".into()], "autotriage", Some("bot".into())).unwrap();
        let opened = json!({"action": "opened", "repository": {"full_name": "acme/calc"},
                            "issue": {"number": 4}, "sender": {"login": "amy"}});
        assert_eq!(
            route("issues", &opened, &s),
            Routed::Jobs(vec![JobSpec::Triage {
                repo: "acme/calc".into(),
                number: 4
            }])
        );
        let other = json!({"action": "opened", "repository": {"full_name": "evil/calc"},
                           "issue": {"number": 4}});
        assert_eq!(
            route("issues", &other, &s),
            Routed::Ignored("evil/calc is not in serve.repos".into())
        );
        let fork = json!({"action": "closed", "repository": {"full_name": "acme/calc"},
            "pull_request": {"number": 9, "merged": true,
              "head": {"ref": "autotriage/issue-4", "repo": {"full_name": "mallory/calc"}}}});
        assert!(matches!(
            route("pull_request", &fork, &s),
            Routed::Ignored(_)
        ));
        let comment = json!({"action": "created", "repository": {"full_name": "acme/calc"},
            "issue": {"number": 4}, "comment": {"id": 77, "body": "please\n/autotriage fix"},
            "sender": {"login": "amy"}});
        assert!(matches!(
            route("issue_comment", &comment, &s),
            Routed::Jobs(ref j) if j[0].kind() == "command"
        ));
        let on_a_pull = json!({"action": "created", "repository": {"full_name": "acme/calc"},
            "issue": {"number": 5, "pull_request": {"url": "x"}},
            "comment": {"id": 78, "body": "/autotriage fix"}, "sender": {"login": "amy"}});
        assert!(matches!(
            route("issue_comment", &on_a_pull, &s),
            Routed::Ignored(_)
        ));
        assert_eq!(route("ping", &json!({}), &s), Routed::Ping);
    }
}
