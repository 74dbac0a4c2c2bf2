//! The trust policy: which issues `fix` may act on. A pure function of the issue.

use serde::Serialize;

use crate::issue::Issue;

/// Associations whose issues are trusted.
pub const TRUSTED_ASSOCIATIONS: &[&str] = &["OWNER", "MEMBER", "COLLABORATOR"];

/// Whether an issue may be fixed, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TrustDecision {
    /// True when `fix` may act without `--force`.
    pub eligible: bool,
    /// The reason, in words a maintainer reads.
    pub reason: String,
}

/// Decide eligibility: a trusted author association, or the trigger label. An unknown
/// association (local sources) is untrusted unless the trigger label is present.
pub fn evaluate(issue: &Issue, trigger_label: &str) -> TrustDecision {
    let association = issue.author_association.as_deref().map(str::to_uppercase);
    if let Some(a) = &association
        && TRUSTED_ASSOCIATIONS.contains(&a.as_str())
    {
        return TrustDecision {
            eligible: true,
            reason: format!("the author is a {}", a.to_lowercase()),
        };
    }
    if issue
        .labels
        .iter()
        .any(|l| l.eq_ignore_ascii_case(trigger_label))
    {
        return match &issue.trigger_label_added_by {
            Some(actor) if !actor.can_write => TrustDecision {
                eligible: false,
                reason: format!(
                    "the trigger label `{trigger_label}` was added by {}, who lacks write access; a maintainer must add it, or run with --force",
                    actor.login
                ),
            },
            Some(actor) => TrustDecision {
                eligible: true,
                reason: format!(
                    "the trigger label `{trigger_label}` was added by {}, who can write",
                    actor.login
                ),
            },
            None => TrustDecision {
                eligible: true,
                reason: format!("it carries the trigger label `{trigger_label}`"),
            },
        };
    }
    let who = match association {
        Some(a) => format!("the author's association is {a}"),
        None => "the author's association is unknown".to_string(),
    };
    TrustDecision {
        eligible: false,
        reason: format!(
            "{who} and the issue lacks the trigger label `{trigger_label}`; a maintainer can add that label, or run with --force"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::issue::IssueState;

    fn issue(assoc: Option<&str>, labels: &[&str]) -> Issue {
        Issue {
            repo: "o/r".into(),
            number: 1,
            title: "t".into(),
            body: String::new(),
            labels: labels.iter().map(|s| s.to_string()).collect(),
            state: IssueState::Open,
            author: None,
            author_association: assoc.map(Into::into),
            created_at: None,
            comments: vec![],
            url: None,
            source: None,
            reactions: None,
            trigger_label_added_by: None,
            locked: false,
        }
    }

    #[test]
    fn policy() {
        assert!(evaluate(&issue(Some("OWNER"), &[]), "autotriage:fix").eligible);
        assert!(evaluate(&issue(Some("member"), &[]), "autotriage:fix").eligible);
        assert!(evaluate(&issue(Some("COLLABORATOR"), &[]), "autotriage:fix").eligible);
        assert!(!evaluate(&issue(Some("CONTRIBUTOR"), &[]), "autotriage:fix").eligible);
        assert!(!evaluate(&issue(Some("NONE"), &["bug"]), "autotriage:fix").eligible);
        assert!(!evaluate(&issue(None, &[]), "autotriage:fix").eligible);
        assert!(evaluate(&issue(None, &["autotriage:fix"]), "autotriage:fix").eligible);
        assert!(evaluate(&issue(Some("NONE"), &["go"]), "go").eligible);
        let mut by_reader = issue(Some("NONE"), &["go"]);
        by_reader.trigger_label_added_by = Some(crate::issue::LabelActor {
            login: "drive-by".into(),
            can_write: false,
        });
        let d = evaluate(&by_reader, "go");
        assert!(
            !d.eligible
                && d.reason
                    .contains("added by drive-by, who lacks write access"),
            "{d:?}"
        );
        by_reader.trigger_label_added_by = Some(crate::issue::LabelActor {
            login: "maint".into(),
            can_write: true,
        });
        assert!(evaluate(&by_reader, "go").eligible);
    }
}
