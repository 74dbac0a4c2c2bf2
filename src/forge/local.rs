//! The local forge: issues from Markdown files with YAML front matter, the JSON that
//! `gh issue list --json number,title,body,labels,author,state,comments,createdAt,url`
//! writes, and CSV files with configurable columns.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::{Batch, Forge, ForgeError, RecordError};
use crate::config::CsvColumns;
use crate::issue::{Comment, Issue, IssueRef, IssueState, Record};

/// Reads local issue files.
#[derive(Debug, Clone)]
pub struct LocalForge {
    /// Repository recorded on issues whose source names none.
    pub default_repo: String,
    /// CSV column names.
    pub csv: CsvColumns,
    /// Applied to every issue read, as prose.
    pub redactor: crate::redact::Redactor,
}

impl Forge for LocalForge {
    fn read(&self, reference: &IssueRef) -> Result<Batch, ForgeError> {
        // Secrets pasted into an issue never go further than this read.
        Ok(self
            .read_unredacted(reference)?
            .into_iter()
            .map(|r| r.map(|i| self.redactor.redact_issue(&i)))
            .collect())
    }
}

impl LocalForge {
    fn read_unredacted(&self, reference: &IssueRef) -> Result<Batch, ForgeError> {
        match reference {
            IssueRef::Dir(dir) => self.read_dir(dir),
            IssueRef::File { path, record } => {
                let kind = FileKind::of(path);
                match kind {
                    FileKind::Markdown => {
                        let text = read(path)?;
                        // One file named on the command line: a bad one is a usage error.
                        let issue = self.parse_markdown(path, &text).map_err(|e| ForgeError::Malformed {
                            location: e.location,
                            message: e.message,
                        })?;
                        Ok(vec![Ok(issue)])
                    }
                    FileKind::Json => {
                        let text = read(path)?;
                        let batch = self.parse_gh_json(path, &text)?;
                        select(reference, batch, record)
                    }
                    FileKind::Csv => {
                        let batch = self.parse_csv(path)?;
                        select(reference, batch, record)
                    }
                    FileKind::Other => Err(ForgeError::Unsupported {
                        reference: reference.to_string(),
                        message: "unknown file type; local issues are .md (front matter), .json (gh issue list --json) or .csv".into(),
                    }),
                }
            }
            IssueRef::Remote { .. } | IssueRef::Repo(_) => Err(ForgeError::Unsupported {
                reference: reference.to_string(),
                message: "reading issues from GitHub needs the GitHub forge, which this build does not have yet\n  fix: export the issues with `gh issue list --json number,title,body,labels,author,state,comments,createdAt,url > issues.json` and pass issues.json".into(),
            }),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FileKind {
    Markdown,
    Json,
    Csv,
    Other,
}

impl FileKind {
    fn of(path: &Path) -> Self {
        match path
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_lowercase)
            .as_deref()
        {
            Some("md" | "markdown") => Self::Markdown,
            Some("json") => Self::Json,
            Some("csv") => Self::Csv,
            _ => Self::Other,
        }
    }
}

fn read(path: &Path) -> Result<String, ForgeError> {
    std::fs::read_to_string(path).map_err(|source| ForgeError::Unreadable {
        path: path.to_path_buf(),
        source,
    })
}

/// Keep the one record a reference asks for.
fn select(reference: &IssueRef, batch: Batch, record: &Record) -> Result<Batch, ForgeError> {
    let (want, what) = match record {
        Record::All => return Ok(batch),
        Record::Number(n) => (*n, "no issue with number"),
        Record::Row(n) => (*n, "no row"),
    };
    let total = batch.len();
    let found = match record {
        Record::Row(n) => batch.into_iter().nth((*n as usize).saturating_sub(1)),
        _ => batch
            .into_iter()
            .find(|r| matches!(r, Ok(i) if i.number == want)),
    };
    match found {
        Some(Ok(issue)) => Ok(vec![Ok(issue)]),
        Some(Err(e)) => Err(ForgeError::Malformed {
            location: e.location,
            message: e.message,
        }),
        None => Err(ForgeError::NotFound {
            reference: reference.to_string(),
            message: format!(
                "{what} {want} (the file has {total} records)\n  fix: pick a number that exists"
            ),
        }),
    }
}

impl LocalForge {
    fn read_dir(&self, dir: &Path) -> Result<Batch, ForgeError> {
        let entries = std::fs::read_dir(dir).map_err(|source| ForgeError::Unreadable {
            path: dir.to_path_buf(),
            source,
        })?;
        let mut paths: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_file() && FileKind::of(p) == FileKind::Markdown)
            .filter(|p| {
                !p.file_name()
                    .is_some_and(|n| n.eq_ignore_ascii_case("README.md"))
            })
            .collect();
        paths.sort();
        Ok(paths
            .iter()
            .map(|p| match std::fs::read_to_string(p) {
                Ok(text) => self.parse_markdown(p, &text),
                Err(e) => Err(RecordError {
                    location: p.display().to_string(),
                    message: format!("cannot read: {e}"),
                }),
            })
            .collect())
    }

    /// Parse one Markdown issue: optional `---` YAML front matter, then the body. The
    /// title is `title:` or the first `# ` heading; the number is `number:` or the
    /// digits of the file name.
    pub fn parse_markdown(&self, path: &Path, text: &str) -> Result<Issue, RecordError> {
        let text = text.trim_start_matches('\u{feff}');
        let loc = |line: Option<usize>| match line {
            Some(l) => format!("{}:{l}", path.display()),
            None => path.display().to_string(),
        };
        let (front, body) = split_front_matter(text).map_err(|line| RecordError {
            location: loc(Some(line)),
            message:
                "front matter opened with `---` is never closed\n  fix: end it with a line `---`"
                    .into(),
        })?;
        let front: FrontMatter = match front {
            Some(yaml) if !yaml.trim().is_empty() => serde_yaml::from_str(yaml).map_err(|e| {
                let raw = e.to_string();
                let msg = raw.split(" at line ").next().unwrap_or(&raw).to_string();
                RecordError {
                    location: loc(e.location().map(|l| l.line() + 1)),
                    message: format!("bad front matter: {msg}\n  fix: see examples/issues/ for the fields (number, title, labels, author, author_association, state, created_at, comments)"),
                }
            })?,
            _ => FrontMatter::default(),
        };
        let mut body = body.trim().to_string();
        let title = match front.title.filter(|t| !t.trim().is_empty()) {
            Some(t) => t.trim().to_string(),
            None => {
                let heading = body
                    .lines()
                    .find(|l| !l.trim().is_empty())
                    .and_then(|l| l.strip_prefix("# "));
                match heading {
                    Some(h) => {
                        let h = h.trim().to_string();
                        body = body
                            .split_once('\n')
                            .map_or(String::new(), |(_, rest)| rest.trim().to_string());
                        h
                    }
                    None => {
                        return Err(RecordError {
                            location: loc(Some(1)),
                            message: "no title\n  fix: add `title:` to the front matter or start the body with a `# ` heading".into(),
                        });
                    }
                }
            }
        };
        let number = match front.number {
            Some(n) if n > 0 => n,
            Some(_) => {
                return Err(RecordError { location: loc(Some(1)), message: "`number` must be 1 or more".into() });
            }
            None => number_from_name(path).ok_or_else(|| RecordError {
                location: loc(Some(1)),
                message: "no issue number\n  fix: add `number:` to the front matter or put it in the file name (e.g. 42.md)".into(),
            })?,
        };
        let state = match front.state.as_deref() {
            None => IssueState::Open,
            Some(s) => IssueState::parse(s).ok_or_else(|| RecordError {
                location: loc(Some(1)),
                message: format!("`state` is {s:?}\n  fix: use open or closed"),
            })?,
        };
        Ok(Issue {
            repo: front.repo.unwrap_or_else(|| self.default_repo.clone()),
            number,
            title,
            body,
            labels: front.labels.map(Labels::into_vec).unwrap_or_default(),
            state,
            author: front.author,
            author_association: front.author_association.map(|a| a.to_uppercase()),
            created_at: front.created_at.map(scalar_to_string),
            comments: front.comments,
            url: front.url,
            source: Some(path.display().to_string()),
            reactions: front.reactions,
            trigger_label_added_by: None,
            locked: false,
        })
    }

    /// Parse `gh issue list --json …` output (a JSON array). A record that does not
    /// fit is reported with its index; the others are kept.
    pub fn parse_gh_json(&self, path: &Path, text: &str) -> Result<Batch, ForgeError> {
        let values: Vec<serde_json::Value> = serde_json::from_str(text).map_err(|e| ForgeError::Malformed {
            location: format!("{}:{}", path.display(), e.line()),
            message: format!(
                "not a JSON array of issues: {e}\n  fix: produce it with `gh issue list --json number,title,body,labels,author,state,comments,createdAt,url`"
            ),
        })?;
        Ok(values
            .into_iter()
            .enumerate()
            .map(|(i, v)| {
                let location = format!("{} record {}", path.display(), i + 1);
                let gh: GhIssue = serde_json::from_value(v).map_err(|e| RecordError {
                    location: location.clone(),
                    message: format!("{e}"),
                })?;
                if gh.title.trim().is_empty() {
                    return Err(RecordError {
                        location,
                        message: "empty `title`".into(),
                    });
                }
                if gh.number == 0 {
                    return Err(RecordError {
                        location,
                        message: "`number` must be 1 or more".into(),
                    });
                }
                if gh.url.as_deref().is_some_and(|u| u.contains("/pull/")) {
                    return Err(RecordError {
                        location,
                        message:
                            "this record is a pull request, not an issue; leave pull requests out"
                                .into(),
                    });
                }
                let state = match gh.state.as_deref() {
                    None => IssueState::Open,
                    Some(s) => IssueState::parse(s).ok_or_else(|| RecordError {
                        location: location.clone(),
                        message: format!("`state` is {s:?}, expected OPEN or CLOSED"),
                    })?,
                };
                let repo = gh
                    .url
                    .as_deref()
                    .and_then(|u| {
                        match IssueRef::parse(
                            u,
                            &crate::issue::RefContext {
                                cwd: PathBuf::new(),
                                default_repo: None,
                            },
                        ) {
                            Ok(IssueRef::Remote { repo, .. }) => Some(repo.to_string()),
                            _ => None,
                        }
                    })
                    .unwrap_or_else(|| self.default_repo.clone());
                Ok(Issue {
                    repo,
                    number: gh.number,
                    title: gh.title,
                    body: gh.body.unwrap_or_default(),
                    labels: gh
                        .labels
                        .into_iter()
                        .map(NamedOrString::into_name)
                        .collect(),
                    state,
                    author: gh.author.map(NamedOrString::into_name),
                    author_association: gh.author_association.map(|a| a.to_uppercase()),
                    created_at: gh.created_at,
                    comments: gh
                        .comments
                        .into_iter()
                        .map(|c| Comment {
                            author: c.author.map(NamedOrString::into_name),
                            author_association: c.author_association,
                            body: c.body.unwrap_or_default(),
                            created_at: c.created_at,
                        })
                        .collect(),
                    url: gh.url,
                    source: Some(format!("{}#{}", path.display(), gh.number)),
                    trigger_label_added_by: None,
                    locked: false,
                    reactions: (!gh.reaction_groups.is_empty())
                        .then(|| gh.reaction_groups.iter().map(|g| g.users.total_count).sum()),
                })
            })
            .collect())
    }

    /// Parse a CSV file with a header row; columns named by `sources.csv.*`.
    pub fn parse_csv(&self, path: &Path) -> Result<Batch, ForgeError> {
        let file = std::fs::File::open(path).map_err(|source| ForgeError::Unreadable {
            path: path.to_path_buf(),
            source,
        })?;
        let mut reader = csv::ReaderBuilder::new()
            .flexible(false)
            .from_reader(std::io::BufReader::new(file));
        let headers = reader
            .headers()
            .map_err(|e| ForgeError::Malformed {
                location: format!("{}:1", path.display()),
                message: format!("no readable header row: {e}"),
            })?
            .clone();
        let find = |name: &str| {
            headers
                .iter()
                .position(|h| h.trim().eq_ignore_ascii_case(name))
        };
        let required = |key: &str, name: &str| {
            find(name).ok_or_else(|| ForgeError::Malformed {
                location: format!("{}:1", path.display()),
                message: format!(
                    "no column {name:?} (columns: {})\n  fix: set sources.csv.{key} in autotriage.yaml to the right column",
                    headers.iter().collect::<Vec<_>>().join(", ")
                ),
            })
        };
        let title_col = required("title", &self.csv.title)?;
        let body_col = required("body", &self.csv.body)?;
        let label_col = find(&self.csv.label);
        let optional = |key: &str, name: &Option<String>| -> Result<Option<usize>, ForgeError> {
            match name {
                None => Ok(None),
                Some(n) => match find(n) {
                    Some(i) => Ok(Some(i)),
                    // `repo`/`created_at` defaults fit the NLBSE set; elsewhere they may be absent.
                    None if key == "repo" || key == "created_at" => Ok(None),
                    None => required(key, n).map(Some),
                },
            }
        };
        let number_col = optional("number", &self.csv.number)?;
        let repo_col = optional("repo", &self.csv.repo)?;
        let state_col = optional("state", &self.csv.state)?;
        let created_col = optional("created_at", &self.csv.created_at)?;

        // Without a number column the row numbers are not issue numbers: such rows live
        // in their own namespace, `local/<file stem>`, never over real issues of a
        // repository (the repository column is then ignored).
        let row_namespace = number_col.is_none().then(|| {
            format!(
                "local/{}",
                path.file_stem().and_then(|s| s.to_str()).unwrap_or("csv")
            )
        });
        let mut batch = Vec::new();
        for (i, row) in reader.records().enumerate() {
            let row_no = i as u64 + 1;
            let record = match row {
                Ok(r) => r,
                Err(e) => {
                    let line = e.position().map_or(0, |p| p.line());
                    batch.push(Err(RecordError {
                        location: format!("{}:{line} (row {row_no})", path.display()),
                        message: format!("unreadable CSV row: {e}"),
                    }));
                    continue;
                }
            };
            let line = record.position().map_or(0, |p| p.line());
            let location = format!("{}:{line} (row {row_no})", path.display());
            let get = |c: Option<usize>| {
                c.and_then(|c| record.get(c))
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
            };
            let title = match get(Some(title_col)) {
                Some(t) => t.to_string(),
                None => {
                    batch.push(Err(RecordError {
                        location,
                        message: format!("empty {:?} column", self.csv.title),
                    }));
                    continue;
                }
            };
            let number = match get(number_col) {
                None => row_no,
                Some(n) => match n.trim_start_matches('#').parse::<u64>() {
                    Ok(n) if n > 0 => n,
                    _ => {
                        batch.push(Err(RecordError {
                            location,
                            message: format!("issue number {n:?} is not a whole number from 1"),
                        }));
                        continue;
                    }
                },
            };
            let state = match get(state_col) {
                None => IssueState::Open,
                Some(s) => match IssueState::parse(s) {
                    Some(st) => st,
                    None => {
                        batch.push(Err(RecordError {
                            location,
                            message: format!("state {s:?} is neither open nor closed"),
                        }));
                        continue;
                    }
                },
            };
            let labels = get(label_col)
                .map(|l| {
                    l.split([',', ';'])
                        .map(str::trim)
                        .filter(|s| !s.is_empty())
                        .map(String::from)
                        .collect()
                })
                .unwrap_or_default();
            batch.push(Ok(Issue {
                repo: match &row_namespace {
                    Some(ns) => ns.clone(),
                    None => get(repo_col).map_or_else(|| self.default_repo.clone(), String::from),
                },
                number,
                title,
                body: record.get(body_col).unwrap_or("").trim().to_string(),
                labels,
                state,
                author: None,
                author_association: None,
                created_at: get(created_col).map(String::from),
                comments: Vec::new(),
                url: None,
                source: Some(location),
                reactions: None,
                trigger_label_added_by: None,
                locked: false,
            }));
        }
        Ok(batch)
    }
}

/// Split `---\nYAML\n---\nBODY`. `Err(line)` when the front matter is not closed.
fn split_front_matter(text: &str) -> Result<(Option<&str>, &str), usize> {
    let first_line_end = text.find('\n').unwrap_or(text.len());
    if text[..first_line_end].trim_end() != "---" {
        return Ok((None, text));
    }
    let rest = &text[(first_line_end + 1).min(text.len())..];
    let mut offset = 0;
    for line in rest.split_inclusive('\n') {
        if line.trim_end() == "---" {
            let yaml = &rest[..offset];
            let body = &rest[offset + line.len()..];
            return Ok((Some(yaml), body));
        }
        offset += line.len();
    }
    Err(1)
}

fn number_from_name(path: &Path) -> Option<u64> {
    let stem = path.file_stem()?.to_str()?;
    let digits: String = stem
        .chars()
        .skip_while(|c| !c.is_ascii_digit())
        .take_while(|c| c.is_ascii_digit())
        .collect();
    digits.parse().ok().filter(|n| *n > 0)
}

fn scalar_to_string(v: serde_yaml::Value) -> String {
    match v {
        serde_yaml::Value::String(s) => s,
        other => serde_yaml::to_string(&other)
            .unwrap_or_default()
            .trim()
            .to_string(),
    }
}

#[derive(Debug, Default, Deserialize)]
struct FrontMatter {
    number: Option<u64>,
    title: Option<String>,
    labels: Option<Labels>,
    author: Option<String>,
    author_association: Option<String>,
    state: Option<String>,
    created_at: Option<serde_yaml::Value>,
    #[serde(default)]
    comments: Vec<Comment>,
    repo: Option<String>,
    url: Option<String>,
    reactions: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Labels {
    List(Vec<String>),
    One(String),
}

impl Labels {
    fn into_vec(self) -> Vec<String> {
        match self {
            Labels::List(v) => v,
            Labels::One(s) => s
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum NamedOrString {
    Name(String),
    Object {
        #[serde(alias = "login")]
        name: String,
    },
}

impl NamedOrString {
    fn into_name(self) -> String {
        match self {
            NamedOrString::Name(s) | NamedOrString::Object { name: s } => s,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct GhIssue {
    number: u64,
    title: String,
    #[serde(default)]
    body: Option<String>,
    #[serde(default)]
    labels: Vec<NamedOrString>,
    #[serde(default)]
    author: Option<NamedOrString>,
    #[serde(default, alias = "author_association")]
    author_association: Option<String>,
    #[serde(default)]
    state: Option<String>,
    #[serde(default)]
    comments: Vec<GhComment>,
    #[serde(default, alias = "created_at")]
    created_at: Option<String>,
    #[serde(default)]
    url: Option<String>,
    #[serde(default)]
    reaction_groups: Vec<GhReactionGroup>,
}

/// `reactionGroups` as gh writes them: `[{"content": "THUMBS_UP", "users": {"totalCount": 3}}]`.
#[derive(Debug, Deserialize)]
struct GhReactionGroup {
    #[serde(default)]
    users: GhCount,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct GhCount {
    #[serde(default)]
    total_count: u64,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct GhComment {
    #[serde(default)]
    author: Option<NamedOrString>,
    #[serde(default)]
    author_association: Option<String>,
    #[serde(default)]
    body: Option<String>,
    #[serde(default)]
    created_at: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn forge() -> LocalForge {
        LocalForge {
            default_repo: "local".into(),
            csv: CsvColumns::default(),
            redactor: crate::redact::Redactor::default(),
        }
    }

    #[test]
    fn markdown_with_front_matter() {
        let text = "---\nnumber: 7\ntitle: Crash on start\nlabels: [bug, p1]\nauthor: ann\nauthor_association: member\nstate: closed\ncreated_at: 2024-01-02\ncomments:\n  - author: bob\n    body: me too\n---\nIt crashes.\n";
        let i = forge().parse_markdown(Path::new("x.md"), text).unwrap();
        assert_eq!(
            (i.number, i.title.as_str(), i.body.as_str()),
            (7, "Crash on start", "It crashes.")
        );
        assert_eq!(i.labels, vec!["bug", "p1"]);
        assert_eq!(i.author_association.as_deref(), Some("MEMBER"));
        assert_eq!(i.state, IssueState::Closed);
        assert_eq!(i.created_at.as_deref(), Some("2024-01-02"));
        assert_eq!(i.comments[0].body, "me too");
    }

    #[test]
    fn markdown_heading_title_and_number_from_name() {
        let i = forge()
            .parse_markdown(Path::new("issues/0042-crash.md"), "# Title here\n\nBody")
            .unwrap();
        assert_eq!(
            (i.number, i.title.as_str(), i.body.as_str()),
            (42, "Title here", "Body")
        );
    }

    #[test]
    fn markdown_errors_have_lines() {
        let e = forge()
            .parse_markdown(Path::new("a.md"), "---\nnumber: 1\ntitle: [unclosed\n---\n")
            .unwrap_err();
        assert!(e.location.starts_with("a.md:"), "{e}");
        let e = forge()
            .parse_markdown(Path::new("b.md"), "---\nnumber: 1\n")
            .unwrap_err();
        assert!(e.message.contains("never closed"));
        let e = forge()
            .parse_markdown(Path::new("c.md"), "---\nnumber: 3\n---\nno heading")
            .unwrap_err();
        assert!(e.message.contains("no title"));
    }

    #[test]
    fn gh_json_records() {
        let text = r#"[{"number":3,"title":"A","body":"b","labels":[{"name":"bug"}],"author":{"login":"x"},"state":"OPEN","comments":[{"author":{"login":"y"},"body":"c","createdAt":"2024-01-01T00:00:00Z"}],"createdAt":"2024-01-01T00:00:00Z","url":"https://github.com/o/r/issues/3","reactionGroups":[{"content":"THUMBS_UP","users":{"totalCount":11}},{"content":"HEART","users":{"totalCount":1}}]},{"title":"no number"}]"#;
        let b = forge().parse_gh_json(Path::new("i.json"), text).unwrap();
        let first = b[0].as_ref().unwrap();
        assert_eq!(
            (first.repo.as_str(), first.number, first.labels.clone()),
            ("o/r", 3, vec!["bug".to_string()])
        );
        assert_eq!(first.comments[0].author.as_deref(), Some("y"));
        assert_eq!(first.reactions, Some(12));
        let err = b[1].as_ref().unwrap_err();
        assert_eq!(err.location, "i.json record 2");
        assert!(err.message.contains("number"), "{}", err.message);
    }
}
