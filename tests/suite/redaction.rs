use crate::suite::common::*;

/// One secret of every kind the redactor knows, planted in an issue.
pub const PLANTED: &[&str] = &[
    "ghp_abcdefghijklmnopqrstuvwxyz0123456789",
    "gho_abcdefghijklmnopqrstuvwxyz0123456789",
    "ghs_abcdefghijklmnopqrstuvwxyz0123456789",
    "github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyz",
    "AKIAIOSFODNN7EXAMPLE",
    "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
    "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
    "bearer-secret-value-123",
    "MIIEowIBAAKCAQEAprivatekeymaterial",
    "my-configured-secret-value",
];

pub fn planted_issue() -> String {
    format!(
        "---\nnumber: 9\ntitle: Crash with token {}\nlabels: [bug]\n---\nThe app crashes. My config:\n\n```\nGITHUB_TOKEN={}\nGH={}\npat={}\naws_access_key_id = {}\naws_secret_access_key = {}\njwt: {}\nAuthorization: Bearer {}\n-----BEGIN OPENSSH PRIVATE KEY-----\n{}\n-----END OPENSSH PRIVATE KEY-----\nmine={}\n```\n",
        PLANTED[0],
        PLANTED[1],
        PLANTED[2],
        PLANTED[3],
        PLANTED[4],
        PLANTED[5],
        PLANTED[6],
        PLANTED[7],
        PLANTED[8],
        PLANTED[9]
    )
}

/// Every file under `dir`, as bytes.
pub fn all_files(dir: &std::path::Path) -> Vec<(std::path::PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push((p.clone(), std::fs::read(&p).unwrap()));
            }
        }
    }
    out
}

pub fn assert_clean(what: &str, bytes: &[u8]) {
    let text = String::from_utf8_lossy(bytes);
    for secret in PLANTED {
        assert!(!text.contains(secret), "{secret} found in {what}");
    }
}

#[test]
fn planted_secrets_appear_in_no_file_and_no_output() {
    let t = TestContext::new();
    t.write(
        "autotriage.yaml",
        "repo: acme/widgets\nredact:\n  secret_vars: [MY_SECRET]\n",
    );
    t.write("issues/9.md", &planted_issue());
    let mut outputs = Vec::new();
    for args in [
        &["memory", "import", "issues"][..],
        &["memory", "show", "acme/widgets#9"],
        &["memory", "show", "acme/widgets#9", "--json"],
        &["memory", "search", "crash", "token"],
        &["memory", "export"],
        &["memory", "list", "--json"],
        &["triage", "issues/9.md"],
        &["triage", "acme/widgets#9", "--json"],
        &["runs", "list"],
    ] {
        let o = t
            .cmd()
            .env("MY_SECRET", PLANTED[9])
            .args(args)
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(0), "{args:?}: {}", stderr(&o));
        outputs.push((format!("{args:?}"), o));
    }
    for (what, o) in &outputs {
        assert_clean(&format!("stdout of {what}"), &o.stdout);
        assert_clean(&format!("stderr of {what}"), &o.stderr);
    }
    // The memory file, the run folders and everything else under .autotriage/.
    assert!(t.path().join(".autotriage/runs").is_dir());
    let files = all_files(&t.path().join(".autotriage"));
    assert!(!files.is_empty());
    for (path, bytes) in files {
        assert_clean(&path.display().to_string(), &bytes);
    }
    // The redacted text still says what kind of secret was there.
    let show = stdout(&outputs[1].1);
    assert!(
        show.contains("[REDACTED:github-token]")
            && show.contains("[REDACTED:private-key]")
            && show.contains("[REDACTED:env]"),
        "{show}"
    );
}
