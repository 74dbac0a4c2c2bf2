//! The [`Runner`] on AWS CodeBuild, for test runs that must not depend on the machine
//! that started them.
//!
//! Per run: the worktree (without `.git`) is zipped and uploaded to
//! `s3://BUCKET/PREFIX/codebuild/<token>/source.zip`; `StartBuild` runs the project
//! with that source and a buildspec made from the setup and test commands, which
//! writes the outputs (exit codes, logs, JUnit XML) as artifacts to
//! `.../<token>/out/`; `BatchGetBuilds` is polled with backoff; the outputs are read
//! back and judged exactly as local ones. Ctrl-C and the time limit call `StopBuild`.

use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use aws_sdk_codebuild::types::{ArtifactPackaging, ArtifactsType, ProjectArtifacts, SourceType};
use aws_sdk_s3::primitives::ByteStream;

use super::sandbox::Exec;
use super::{RunOutput, Runner, VerifyError};

/// Where builds run and their files go.
#[derive(Debug, Clone, Default)]
pub struct CodeBuildSettings {
    /// The CodeBuild project (made beforehand, with a role that can read and write the
    /// bucket).
    pub project: String,
    /// The bucket for sources and outputs.
    pub bucket: String,
    /// Key prefix.
    pub prefix: String,
    /// AWS region (else the standard chain's).
    pub region: Option<String>,
    /// Endpoint override for CodeBuild and S3 (emulators, VPC endpoints).
    pub endpoint_url: Option<String>,
}

/// Runs tests as CodeBuild builds.
pub struct CodeBuildRunner {
    codebuild: aws_sdk_codebuild::Client,
    s3: aws_sdk_s3::Client,
    runtime: tokio::runtime::Runtime,
    settings: CodeBuildSettings,
    counter: AtomicU64,
    /// First wait before polling, and the longest wait between polls.
    pub poll: (Duration, Duration),
}

fn failed(detail: String) -> VerifyError {
    VerifyError::Io(format!("CodeBuild: {detail}"))
}

impl CodeBuildRunner {
    /// Connect (no request is made yet).
    pub fn connect(settings: &CodeBuildSettings) -> Result<Self, VerifyError> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| failed(format!("could not start the AWS client: {e}")))?;
        let config = crate::aws::load_config(
            &runtime,
            settings.region.as_deref(),
            settings.endpoint_url.as_deref(),
        );
        if config.region().is_none() {
            return Err(VerifyError::Sandbox(
                "test.runner is codebuild, and no AWS region is set (test.region, AWS_REGION)"
                    .into(),
            ));
        }
        let s3_conf = aws_sdk_s3::config::Builder::from(&config)
            .force_path_style(settings.endpoint_url.is_some())
            .build();
        Ok(Self {
            codebuild: aws_sdk_codebuild::Client::new(&config),
            s3: aws_sdk_s3::Client::from_conf(s3_conf),
            runtime,
            settings: settings.clone(),
            counter: AtomicU64::new(0),
            poll: (Duration::from_secs(2), Duration::from_secs(15)),
        })
    }

    fn key(&self, token: &str, name: &str) -> String {
        let p = self.settings.prefix.trim_matches('/');
        if p.is_empty() {
            format!("codebuild/{token}/{name}")
        } else {
            format!("{p}/codebuild/{token}/{name}")
        }
    }

    /// An output of a build; `None` when it wrote none.
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, VerifyError> {
        self.runtime.block_on(async {
            match self
                .s3
                .get_object()
                .bucket(&self.settings.bucket)
                .key(key)
                .send()
                .await
            {
                Ok(o) => o
                    .body
                    .collect()
                    .await
                    .map(|b| Some(b.into_bytes().to_vec()))
                    .map_err(|e| failed(format!("s3:GetObject {key}: {e}"))),
                Err(aws_sdk_s3::error::SdkError::ServiceError(e)) if e.err().is_no_such_key() => {
                    Ok(None)
                }
                Err(e) => Err(failed(format!(
                    "s3:GetObject s3://{}/{key}: {}",
                    self.settings.bucket,
                    aws_sdk_s3::error::DisplayErrorContext(&e)
                ))),
            }
        })
    }

    fn stop_build(&self, id: &str) {
        let _ = self
            .runtime
            .block_on(self.codebuild.stop_build().id(id).send());
    }
}

/// The buildspec: the setup, then the tests, each with its exit code and log kept as
/// artifacts (`out/`), so a failing test is a result, not a failed build.
pub fn buildspec(setup: Option<&str>, command: &str) -> String {
    // An absolute JUnit path, so a command that changes directory still writes it.
    let mut commands = vec![
        "mkdir -p autotriage-out".to_string(),
        "export AUTOTRIAGE_JUNIT=\"$PWD/autotriage-out/junit.xml\"".to_string(),
    ];
    match setup {
        // On lines of their own, so a trailing comment or a heredoc in the command
        // cannot swallow the redirection and the exit code.
        Some(s) => commands.push(format!(
            "(\n{s}\n) > autotriage-out/setup.log 2>&1; echo $? > autotriage-out/setup-exit-code"
        )),
        None => commands.push("echo 0 > autotriage-out/setup-exit-code".into()),
    }
    commands.push(format!(
        "if [ \"$(cat autotriage-out/setup-exit-code)\" = 0 ]; then (\n{command}\n) > autotriage-out/output.log 2>&1; echo $? > autotriage-out/exit-code; fi"
    ));
    let spec = serde_json::json!({
        "version": 0.2,
        "env": {"variables": {"CI": "true", "AUTOTRIAGE_JUNIT": "autotriage-out/junit.xml", "AUTOTRIAGE_SANDBOX": "codebuild"}},
        "phases": {"build": {"commands": commands}},
        "artifacts": {"files": ["**/*"], "base-directory": "autotriage-out"},
    });
    serde_yaml::to_string(&spec).unwrap_or_default()
}

/// The worktree as a zip, without `.git`.
pub fn zip_dir(dir: &Path) -> Result<Vec<u8>, VerifyError> {
    let io = |e: &dyn std::fmt::Display| failed(format!("could not pack {}: {e}", dir.display()));
    let mut out = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let options = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated);
    let walker = ignore::WalkBuilder::new(dir)
        .hidden(false)
        .git_ignore(false)
        .git_exclude(false)
        .ignore(false)
        .filter_entry(|e| e.file_name() != ".git")
        .build();
    for entry in walker {
        let entry = entry.map_err(|e| io(&e))?;
        let path = entry.path();
        // Regular files only: a symlink (to ~/.ssh, say) is never followed off the tree.
        if !entry.file_type().is_some_and(|t| t.is_file()) {
            continue;
        }
        let mode = {
            use std::os::unix::fs::PermissionsExt;
            std::fs::symlink_metadata(path)
                .map(|m| m.permissions().mode())
                .unwrap_or(0o644)
        };
        let rel = path
            .strip_prefix(dir)
            .map_err(|e| io(&e))?
            .to_string_lossy()
            .replace('\\', "/");
        let bytes = std::fs::read(path).map_err(|e| io(&e))?;
        out.start_file(rel, options.unix_permissions(mode))
            .map_err(|e| io(&e))?;
        out.write_all(&bytes).map_err(|e| io(&e))?;
    }
    let cursor = out.finish().map_err(|e| io(&e))?;
    Ok(cursor.into_inner())
}

impl Runner for CodeBuildRunner {
    fn describe(&self) -> String {
        format!("CodeBuild project {}", self.settings.project)
    }

    fn sandboxed(&self) -> bool {
        // Off this machine, in CodeBuild's own container.
        true
    }

    fn run(
        &self,
        dir: &Path,
        setup: Option<&str>,
        command: &str,
        timeout: Duration,
        stop: &(dyn Fn() -> bool + Sync),
    ) -> Result<RunOutput, VerifyError> {
        let start = Instant::now();
        let n = self.counter.fetch_add(1, Ordering::SeqCst);
        let name = dir
            .file_name()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "run".into());
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let token = format!("{name}-{n}-{nanos:08x}");
        let source = zip_dir(dir)?;
        let source_key = self.key(&token, "source.zip");
        self.runtime
            .block_on(
                self.s3
                    .put_object()
                    .bucket(&self.settings.bucket)
                    .key(&source_key)
                    .body(ByteStream::from(source))
                    .send(),
            )
            .map_err(|e| {
                failed(format!(
                    "s3:PutObject of the source to s3://{}/{source_key}: {}",
                    self.settings.bucket,
                    aws_sdk_s3::error::DisplayErrorContext(&e)
                ))
            })?;
        let out_path = self.key(&token, "");
        let artifacts = ProjectArtifacts::builder()
            .r#type(ArtifactsType::S3)
            .location(&self.settings.bucket)
            .path(out_path.trim_end_matches('/'))
            .name("out")
            .packaging(ArtifactPackaging::None)
            .build()
            .map_err(|e| failed(e.to_string()))?;
        let minutes = (timeout.as_secs().div_ceil(60) as i32).clamp(5, 2160);
        let started = self
            .runtime
            .block_on(
                self.codebuild
                    .start_build()
                    .project_name(&self.settings.project)
                    .source_type_override(SourceType::S3)
                    .source_location_override(format!("{}/{source_key}", self.settings.bucket))
                    .buildspec_override(buildspec(setup, command))
                    .artifacts_override(artifacts)
                    .timeout_in_minutes_override(minutes)
                    .send(),
            )
            .map_err(|e| {
                let text = aws_sdk_codebuild::error::DisplayErrorContext(&e).to_string();
                if text.contains("ResourceNotFound") {
                    VerifyError::Sandbox(format!(
                        "the CodeBuild project {} does not exist ({text})\n  fix: create it, or correct test.project",
                        self.settings.project
                    ))
                } else {
                    failed(format!("codebuild:StartBuild: {text}"))
                }
            })?;
        let id = started
            .build_value()
            .and_then(|b| b.id())
            .unwrap_or_default()
            .to_string();
        // Poll with backoff; stop the build on Ctrl-C or at the limit.
        let mut wait = self.poll.0;
        let mut timed_out = false;
        let status = loop {
            let until = Instant::now() + wait;
            while Instant::now() < until {
                if stop() {
                    self.stop_build(&id);
                    return Err(VerifyError::Interrupted);
                }
                if start.elapsed() >= timeout {
                    timed_out = true;
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            if timed_out {
                self.stop_build(&id);
                break "STOPPED".to_string();
            }
            let got = match self
                .runtime
                .block_on(self.codebuild.batch_get_builds().ids(&id).send())
            {
                Ok(g) => g,
                Err(e) => {
                    // Nothing is left running behind an error.
                    self.stop_build(&id);
                    return Err(failed(format!(
                        "codebuild:BatchGetBuilds: {}",
                        aws_sdk_codebuild::error::DisplayErrorContext(&e)
                    )));
                }
            };
            let Some(status) = got
                .builds()
                .first()
                .and_then(|b| b.build_status())
                .map(|s| s.as_str().to_string())
            else {
                self.stop_build(&id);
                return Err(failed(format!("build {id} is not known to CodeBuild")));
            };
            if status != "IN_PROGRESS" {
                break status;
            }
            wait = (wait.mul_f32(1.5)).min(self.poll.1);
        };
        let seconds = start.elapsed().as_secs_f64();
        let read = |name: &str| -> Result<Option<String>, VerifyError> {
            Ok(self
                .get(&self.key(&token, &format!("out/{name}")))?
                .map(|b| String::from_utf8_lossy(&b).into_owned()))
        };
        let code = |name: &str| -> Result<Option<i32>, VerifyError> {
            Ok(read(name)?.and_then(|t| t.trim().parse::<i32>().ok()))
        };
        let setup_exit = code("setup-exit-code")?;
        let exit = code("exit-code")?;
        // A build that broke (no exit code from our commands) is not a test result.
        if !timed_out && setup_exit.is_none() && exit.is_none() {
            return Err(failed(format!(
                "build {id} ended {status} without running the commands (see its log in the CodeBuild console)"
            )));
        }
        let exec = |cmd: &str, exit: Option<i32>, output: String| Exec {
            command: cmd.to_string(),
            exit_code: if timed_out { None } else { exit },
            timed_out,
            seconds,
            output,
            output_cut_bytes: 0,
            sandboxed: true,
        };
        let mut out = RunOutput::default();
        if let Some(s) = setup {
            out.setup = Some(exec(s, setup_exit, read("setup.log")?.unwrap_or_default()));
            if setup_exit != Some(0) && !timed_out {
                if setup_exit.is_none()
                    && let Some(e) = out.setup.as_mut()
                {
                    e.output =
                        format!("CodeBuild build {id} ended {status} before the setup finished");
                }
                return Ok(out);
            }
        }
        let mut output = read("output.log")?.unwrap_or_default();
        if exit.is_none() {
            output.push_str(&format!(
                "\n[CodeBuild build {id} ended {status} without the test command's exit code]\n"
            ));
        }
        out.test = Some(exec(command, exit, output));
        out.junit = read("junit.xml")?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_buildspec_keeps_exit_codes_whatever_the_commands_hold() {
        let spec = buildspec(Some("pip install -e . # editable"), "pytest -k 'a: b'");
        let v: serde_yaml::Value = serde_yaml::from_str(&spec).unwrap_or_default();
        let commands: Vec<String> = v["phases"]["build"]["commands"]
            .as_sequence()
            .map(|s| {
                s.iter()
                    .filter_map(|c| c.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default();
        assert_eq!(commands.len(), 4, "{spec}");
        assert_eq!(
            commands[2],
            "(\npip install -e . # editable\n) > autotriage-out/setup.log 2>&1; echo $? > autotriage-out/setup-exit-code"
        );
        assert!(commands[3].contains("(\npytest -k 'a: b'\n) > autotriage-out/output.log"));
        assert_eq!(
            v["artifacts"]["base-directory"].as_str(),
            Some("autotriage-out")
        );
    }

    #[test]
    fn the_zip_holds_regular_files_with_their_modes_and_no_git()
    -> Result<(), Box<dyn std::error::Error>> {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir()?;
        std::fs::create_dir_all(d.path().join(".git"))?;
        std::fs::write(d.path().join(".git/config"), "x")?;
        std::fs::write(d.path().join("run.sh"), "#!/bin/sh\n")?;
        std::fs::set_permissions(
            d.path().join("run.sh"),
            std::fs::Permissions::from_mode(0o755),
        )?;
        std::os::unix::fs::symlink("/etc/passwd", d.path().join("secret"))?;
        let bytes = zip_dir(d.path()).map_err(|e| e.to_string())?;
        let mut z = zip::ZipArchive::new(std::io::Cursor::new(bytes))?;
        let names: Vec<String> = z.file_names().map(String::from).collect();
        assert_eq!(names, vec!["run.sh".to_string()]);
        assert_eq!(
            z.by_name("run.sh")?.unix_mode().map(|m| m & 0o777),
            Some(0o755)
        );
        Ok(())
    }
}
