//! The heroku provider: a Platform API build of the exact sha. GitHub's `tarball` endpoint is
//! asked for the archive's temporary link (its `302 Location`, not followed: faseng never
//! downloads the source), `POST /apps/{app}/builds` gets it as `source_blob.url` with the sha
//! as `source_blob.version`, the build's `output_stream_url` is streamed into the log, and the
//! build is polled (backoff up to 10 s) until it `succeeded` or `failed`. A timeout cancels
//! the build. Heroku's 401/403/404/422 are `error`s that say what is wrong.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt as _;
use serde_json::{Value, json};

use super::settings::ProviderSettings;
use super::{Plan, Provider, RunContext, RunResult};
use crate::messages;
use crate::outcome::{RunError, RunFailure, RunOutcome};
use crate::process::Exit;
use crate::runlog::{LINE_MAX_BYTES, LineSplitter, RunLog};

/// Heroku's media type for the v3 Platform API.
pub const ACCEPT: &str = "application/vnd.heroku+json; version=3";

/// Longest wait between two polls of a build.
pub const MAX_POLL_INTERVAL: Duration = Duration::from_secs(10);

/// Deploys with Heroku builds.
#[derive(Debug)]
pub struct HerokuProvider {
    settings: Arc<ProviderSettings>,
    build_id: Mutex<Option<String>>,
}

impl HerokuProvider {
    /// A heroku provider for one run.
    pub fn new(settings: Arc<ProviderSettings>) -> Self {
        Self {
            settings,
            build_id: Mutex::new(None),
        }
    }
}

/// True for a Heroku app name (`^[a-z][a-z0-9-]{1,28}[a-z0-9]$`, from the Platform API schema).
pub fn valid_app_name(name: &str) -> bool {
    let b = name.as_bytes();
    (3..=30).contains(&b.len())
        && b[0].is_ascii_lowercase()
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[b.len() - 1] != b'-'
}

/// The Heroku app of a run: `heroku_<env>_name`, else `heroku_name`.
pub fn target_app(ctx: &RunContext<'_>) -> Result<String, String> {
    let name = ctx.app.heroku_app(ctx.env).ok_or_else(|| {
        format!(
            "app.json sets neither heroku_{}_name nor heroku_name for {}",
            ctx.env, ctx.app.name
        )
    })?;
    if valid_app_name(name) {
        Ok(name.to_owned())
    } else {
        Err(format!("{name:?} is not a Heroku app name"))
    }
}

/// The message of a Heroku or GitHub error body (`{"id": …, "message": …}`), if any.
fn api_message(body: &str) -> String {
    serde_json::from_str::<Value>(body)
        .ok()
        .and_then(|v| v.get("message").and_then(Value::as_str).map(str::to_owned))
        .map(|m| messages::truncate(&m, 200))
        .unwrap_or_default()
}

/// What a refused build request means, for the `error` status.
pub fn heroku_refusal(status: u16, app: &str, message: &str) -> String {
    let detail = if message.is_empty() {
        String::new()
    } else {
        format!(": {message}")
    };
    match status {
        401 => format!("Heroku rejected HEROKU_API_KEY (401 Unauthorized){detail}"),
        403 => format!("HEROKU_API_KEY may not build {app} (403 Forbidden){detail}"),
        404 => format!(
            "Heroku app {app} not found (404): check heroku_<env>_name / heroku_name and the key's access"
        ),
        422 => format!("Heroku refused the build for {app} (422){detail}"),
        429 => format!("Heroku rate limit reached (429){detail}"),
        s => format!("Heroku answered {s} to the build request{detail}"),
    }
}

/// Aborts a task when dropped (the output stream must not outlive the run).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Why a build did not end well.
enum BuildEnd {
    Succeeded,
    Failed,
    Refused(String),
}

impl HerokuProvider {
    fn api(&self) -> String {
        self.settings
            .config
            .heroku_api_url
            .trim_end_matches('/')
            .to_owned()
    }

    fn key(&self) -> Result<String, String> {
        self.settings
            .config
            .heroku_api_key
            .as_ref()
            .map(|k| k.expose().trim().to_owned())
            .filter(|k| !k.is_empty())
            .ok_or_else(|| "HEROKU_API_KEY is not set on this deployer".to_owned())
    }

    /// GitHub's temporary link to the tarball of the sha (the `Location` of its 302).
    async fn tarball_url(&self, ctx: &RunContext<'_>) -> Result<String, String> {
        let api = ctx
            .app
            .github_api
            .as_deref()
            .map(|a| a.trim_end_matches('/').to_owned())
            .unwrap_or_else(|| self.settings.github_api_url.clone());
        let repo = &ctx.app.repository;
        let url = format!(
            "{api}/repos/{}/{}/tarball/{}",
            repo.owner(),
            repo.name(),
            ctx.sha
        );
        let mut req = self
            .settings
            .http
            .get(&url)
            .header("Accept", "application/vnd.github+json")
            .header("X-GitHub-Api-Version", "2022-11-28")
            .timeout(Duration::from_secs(30));
        // The URL is built on the app's own API base, so the token only goes to that origin.
        if let Some(token) = ctx.github_token {
            req = req.bearer_auth(token.expose());
        }
        let resp = req
            .send()
            .await
            .map_err(|e| format!("GitHub could not be asked for the tarball of {repo}: {e}"))?;
        let status = resp.status().as_u16();
        if (300..400).contains(&status) {
            return resp
                .headers()
                .get("location")
                .and_then(|v| v.to_str().ok())
                .filter(|l| l.starts_with("https://") || l.starts_with("http://"))
                .map(str::to_owned)
                .ok_or_else(|| format!("GitHub answered {status} without a usable Location for the tarball of {repo}"));
        }
        let message = api_message(&resp.text().await.unwrap_or_default());
        Err(match status {
            401 => format!(
                "GitHub refused the token asking for the tarball of {repo} (401): {message}"
            ),
            403 | 404 => format!(
                "GitHub has no tarball of {repo}@{} for this token ({status}): check the token's access to the repository",
                ctx.sha.short()
            ),
            s => format!("GitHub answered {s} asking for the tarball of {repo}: {message}"),
        })
    }

    async fn build(&self, ctx: &RunContext<'_>, log: &RunLog) -> BuildEnd {
        let (app, key) = match (target_app(ctx), self.key()) {
            (Ok(a), Ok(k)) => (a, k),
            (Err(e), _) | (_, Err(e)) => return BuildEnd::Refused(e),
        };
        log.header(
            "heroku",
            &format!(
                "GET {}/tarball/{} (GitHub's link to the source; not downloaded)",
                ctx.app.repository,
                ctx.sha.short()
            ),
        );
        let source = match self.tarball_url(ctx).await {
            Ok(u) => u,
            Err(e) => return BuildEnd::Refused(e),
        };
        let api = self.api();
        log.header(
            "heroku",
            &format!(
                "POST {api}/apps/{app}/builds (source_blob.version {})",
                ctx.sha
            ),
        );
        let body = json!({"source_blob": {
            "url": source,
            "version": ctx.sha.as_str(),
            "version_description": format!("{} (deployment #{} by {})", ctx.git_ref, ctx.deployment_id, ctx.user),
        }});
        let resp = match self
            .settings
            .http
            .post(format!("{api}/apps/{app}/builds"))
            .header("Accept", ACCEPT)
            .bearer_auth(&key)
            .json(&body)
            .timeout(Duration::from_secs(60))
            .send()
            .await
        {
            Ok(r) => r,
            Err(e) => return BuildEnd::Refused(format!("Heroku could not be reached: {e}")),
        };
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap_or_default();
        if status != 201 && status != 200 {
            return BuildEnd::Refused(heroku_refusal(status, &app, &api_message(&text)));
        }
        let build: Value = match serde_json::from_str(&text) {
            Ok(v) => v,
            Err(e) => return BuildEnd::Refused(format!("Heroku's build answer is not JSON: {e}")),
        };
        let Some(id) = build.get("id").and_then(Value::as_str).map(str::to_owned) else {
            return BuildEnd::Refused("Heroku's build answer has no id".to_owned());
        };
        *self.build_id.lock().expect("build id lock") = Some(id.clone());
        log.header("heroku", &format!("build {id} created for {app}"));

        let stream = build
            .get("output_stream_url")
            .and_then(Value::as_str)
            .map(|url| {
                AbortOnDrop(tokio::spawn(stream_output(
                    self.settings.http.clone(),
                    url.to_owned(),
                    log.clone(),
                )))
            });

        let mut interval = Duration::from_millis(500);
        let mut warned = false;
        loop {
            tokio::time::sleep(interval).await;
            interval = (interval * 2).min(MAX_POLL_INTERVAL);
            let resp = self
                .settings
                .http
                .get(format!("{api}/apps/{app}/builds/{id}"))
                .header("Accept", ACCEPT)
                .bearer_auth(&key)
                .timeout(Duration::from_secs(30))
                .send()
                .await;
            let (code, text) = match resp {
                Ok(r) => (r.status().as_u16(), r.text().await.unwrap_or_default()),
                Err(e) => {
                    if !warned {
                        log.header(
                            "heroku",
                            &format!("polling the build failed, retrying: {e}"),
                        );
                        warned = true;
                    }
                    continue;
                }
            };
            match code {
                200 => {}
                401 | 403 | 404 => {
                    return BuildEnd::Refused(heroku_refusal(code, &app, &api_message(&text)));
                }
                _ => {
                    if !warned {
                        log.header(
                            "heroku",
                            &format!("polling the build answered {code}, retrying"),
                        );
                        warned = true;
                    }
                    continue;
                }
            }
            let status = serde_json::from_str::<Value>(&text)
                .ok()
                .and_then(|v| v.get("status").and_then(Value::as_str).map(str::to_owned))
                .unwrap_or_default();
            match status.as_str() {
                "pending" => continue,
                "succeeded" | "failed" => {
                    if let Some(s) = stream.as_ref() {
                        // The stream ends with the build; give it a moment to deliver the rest.
                        let handle = &s.0;
                        let _ = tokio::time::timeout(Duration::from_secs(5), async {
                            while !handle.is_finished() {
                                tokio::time::sleep(Duration::from_millis(20)).await;
                            }
                        })
                        .await;
                    }
                    log.header("heroku", &format!("build {id} {status}"));
                    return if status == "succeeded" {
                        BuildEnd::Succeeded
                    } else {
                        BuildEnd::Failed
                    };
                }
                other => {
                    return BuildEnd::Refused(format!(
                        "Heroku reports an unknown build status {other:?}"
                    ));
                }
            }
        }
    }

    async fn cancel(&self, ctx: &RunContext<'_>, log: &RunLog) {
        let id = self.build_id.lock().expect("build id lock").clone();
        let (Some(id), Ok(app), Ok(key)) = (id, target_app(ctx), self.key()) else {
            return;
        };
        let resp = self
            .settings
            .http
            .delete(format!("{}/apps/{app}/builds/{id}", self.api()))
            .header("Accept", ACCEPT)
            .bearer_auth(&key)
            .timeout(Duration::from_secs(30))
            .send()
            .await;
        match resp {
            Ok(r) if r.status().is_success() => {
                log.header("heroku", &format!("cancelled build {id}"))
            }
            Ok(r) => log.header(
                "heroku",
                &format!("cancelling build {id} answered {}", r.status().as_u16()),
            ),
            Err(e) => log.header("heroku", &format!("cancelling build {id} failed: {e}")),
        }
    }
}

/// How many times a dropped output stream is resumed.
pub const STREAM_RESUMES: u32 = 3;

/// Copies the build output into the log, line by line (a line longer than
/// [`LINE_MAX_BYTES`] in pieces, so a stream without newlines is never held whole), until
/// the stream ends. A stream that drops is resumed where it stopped (`Range: bytes=<n>-`,
/// as Heroku documents for `text/plain`); a server that answers the whole stream again
/// (200, not 206) has the part already logged skipped.
async fn stream_output(http: reqwest::Client, url: String, log: RunLog) {
    let mut received: u64 = 0;
    let mut lines = LineSplitter::new(LINE_MAX_BYTES);
    let to_log = |line: &[u8]| log.line(&String::from_utf8_lossy(line));
    let mut resumes = 0;
    loop {
        let mut req = http.get(&url).header("Accept", "text/plain");
        if received > 0 {
            req = req.header("Range", format!("bytes={received}-"));
        }
        let resp = match req.send().await {
            Ok(r) if r.status().is_success() => r,
            Ok(r) => {
                log.header(
                    "heroku",
                    &format!("build output stream answered {}", r.status().as_u16()),
                );
                break;
            }
            Err(e) => {
                log.header("heroku", &format!("build output stream failed: {e}"));
                break;
            }
        };
        let mut skip = if received > 0 && resp.status().as_u16() != 206 {
            received
        } else {
            0
        };
        let mut body = resp.bytes_stream();
        let mut interrupted = false;
        while let Some(chunk) = body.next().await {
            match chunk {
                Ok(bytes) => {
                    let mut bytes = &bytes[..];
                    if skip > 0 {
                        let n = (skip as usize).min(bytes.len());
                        bytes = &bytes[n..];
                        skip -= n as u64;
                    }
                    received += bytes.len() as u64;
                    lines.push(bytes, to_log);
                }
                Err(e) => {
                    log.header("heroku", &format!("build output stream interrupted: {e}"));
                    interrupted = true;
                    break;
                }
            }
        }
        if !interrupted || resumes >= STREAM_RESUMES {
            break;
        }
        resumes += 1;
        log.header(
            "heroku",
            &format!("resuming the build output at byte {received}"),
        );
    }
    lines.finish(to_log);
}

#[async_trait]
impl Provider for HerokuProvider {
    fn name(&self) -> &'static str {
        "heroku"
    }

    async fn prepare(&self, ctx: &RunContext<'_>, log: &RunLog) -> Result<Plan, String> {
        let app = target_app(ctx)?;
        self.key()?;
        log.header(
            "prepare",
            &format!(
                "Heroku build of {} for app {app} ({})",
                ctx.sha.short(),
                ctx.env
            ),
        );
        Ok(Plan::default())
    }

    async fn run(
        &self,
        ctx: &RunContext<'_>,
        _plan: Plan,
        log: &RunLog,
        _on_spawn: &(dyn Fn(i32) + Send + Sync),
    ) -> RunResult {
        if let Err(e) = ctx.confirm_lease().await {
            return RunResult::SpawnFailed(e.to_string());
        }
        match tokio::time::timeout_at(ctx.deadline, self.build(ctx, log)).await {
            Ok(BuildEnd::Succeeded) => RunResult::Exited(Exit::Code(0)),
            Ok(BuildEnd::Failed) => RunResult::Exited(Exit::Code(1)),
            Ok(BuildEnd::Refused(why)) => RunResult::SpawnFailed(why),
            Err(_) => {
                let secs = ctx.timeout.as_secs_f64().round() as u64;
                log.line(&format!(
                    "==> timed out after {secs} s: cancelling the Heroku build"
                ));
                self.cancel(ctx, log).await;
                RunResult::Exited(Exit::TimedOut { secs })
            }
        }
    }

    fn report(&self, _ctx: &RunContext<'_>, result: &RunResult, log: &RunLog) -> RunOutcome {
        match result {
            RunResult::Exited(Exit::Code(0)) => RunOutcome::Success,
            RunResult::Exited(Exit::TimedOut { secs }) => {
                RunOutcome::Failed(RunFailure::TimedOut { secs: *secs })
            }
            RunResult::Exited(_) => RunOutcome::Failed(RunFailure::HerokuBuild {
                last_line: log.last_output_line(),
            }),
            RunResult::SpawnFailed(why) => {
                log.header(self.name(), why);
                RunOutcome::Error(RunError::CouldNotRun(why.clone()))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runlog::Redactor;
    use crate::store::{SqliteStore, Store};

    #[tokio::test]
    async fn build_output_without_newlines_is_logged_in_bounded_pieces() {
        let body = format!("{}\nReleased v7\n", "a".repeat(LINE_MAX_BYTES * 3 + 10));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/output", listener.local_addr().unwrap());
        let served = body.clone();
        let app =
            axum::Router::new().route("/output", axum::routing::get(move || async { served }));
        let server = tokio::spawn(async move { axum::serve(listener, app).await });
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(
            SqliteStore::open(&dir.path().join("h.db"), "q")
                .await
                .unwrap(),
        );
        let (log, writer) = RunLog::start(store.clone(), "o/r/3".into(), Redactor::default());
        stream_output(reqwest::Client::new(), url, log.clone()).await;
        server.abort();
        writer.finish(log).await;
        let lines: Vec<String> = store
            .read_log("o/r/3", 0)
            .await
            .unwrap()
            .into_iter()
            .map(|l| l.split_once(' ').unwrap().1.to_owned())
            .collect();
        let sizes: Vec<usize> = lines.iter().map(String::len).collect();
        assert_eq!(
            sizes,
            [LINE_MAX_BYTES, LINE_MAX_BYTES, LINE_MAX_BYTES, 10, 11]
        );
        assert_eq!(lines[4], "Released v7");
    }

    #[test]
    fn app_names_follow_the_platform_api_schema() {
        for ok in ["abc", "my-app-1", "a12"] {
            assert!(valid_app_name(ok), "{ok}");
        }
        for bad in [
            "",
            "ab",
            "1abc",
            "-abc",
            "abc-",
            "ABC",
            "a_b",
            &"a".repeat(31),
            "a b",
        ] {
            assert!(!valid_app_name(bad), "{bad}");
        }
    }

    #[test]
    fn refusals_say_what_is_wrong() {
        assert!(
            heroku_refusal(401, "x", "Invalid credentials provided.")
                .contains("rejected HEROKU_API_KEY")
        );
        assert!(heroku_refusal(403, "x", "").contains("may not build x"));
        assert!(
            heroku_refusal(404, "x", "Couldn't find that app.").contains("Heroku app x not found")
        );
        assert!(heroku_refusal(422, "x", "bad blob").ends_with("(422): bad blob"));
        assert_eq!(
            api_message(r#"{"id":"unauthorized","message":"Invalid credentials provided."}"#),
            "Invalid credentials provided."
        );
        assert_eq!(api_message("<html>"), "");
    }
}
