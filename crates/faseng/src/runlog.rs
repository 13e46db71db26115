//! A run's log: timestamped, redacted lines written to the store in batches (so every
//! `faseng serve` can show it, live), capped per run with the truncation noted, and a
//! short in-memory tail for failure reports.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use tracing::Instrument as _;

use serde_json::Value;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::store::Store;

/// Bytes of log kept per run.
pub const LOG_CAP_BYTES: usize = 5 * 1024 * 1024;

/// Lines kept in memory for the failure report.
pub const TAIL_LINES: usize = 20;

/// Replaces secrets in text with `***`.
#[derive(Debug, Clone, Default)]
pub struct Redactor {
    secrets: Vec<String>,
}

impl Redactor {
    /// A redactor for these values (values shorter than 4 characters are ignored: they
    /// would mangle ordinary text and are not secrets worth the name).
    pub fn new(secrets: impl IntoIterator<Item = String>) -> Self {
        let mut secrets: Vec<String> = secrets
            .into_iter()
            .filter(|s| s.trim().len() >= 4)
            .collect();
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        secrets.dedup();
        Self { secrets }
    }

    /// Adds the values of an app config whose keys look secret (token, secret, password, key).
    pub fn with_config_secrets(mut self, config: &serde_json::Map<String, Value>) -> Self {
        fn walk(v: &Value, secret_key: bool, out: &mut Vec<String>) {
            match v {
                Value::String(s) if secret_key => out.push(s.clone()),
                Value::Object(m) => {
                    for (k, v) in m {
                        walk(v, secret_key || is_secret_key(k), out);
                    }
                }
                Value::Array(a) => a.iter().for_each(|v| walk(v, secret_key, out)),
                _ => {}
            }
        }
        let mut found = Vec::new();
        for (k, v) in config {
            walk(v, is_secret_key(k), &mut found);
        }
        let mut all = std::mem::take(&mut self.secrets);
        all.extend(found);
        Self::new(all)
    }

    /// The text with every secret replaced.
    pub fn redact(&self, text: &str) -> String {
        let mut out = text.to_owned();
        for s in &self.secrets {
            if out.contains(s.as_str()) {
                out = out.replace(s.as_str(), "***");
            }
        }
        out
    }
}

/// True for config keys whose values must never be shown.
pub fn is_secret_key(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    ["token", "secret", "password", "key"]
        .iter()
        .any(|w| k.contains(w))
}

struct Shared {
    tail: VecDeque<String>,
    bytes: usize,
    truncated: bool,
}

/// The writer side of one run's log; cheap to clone.
#[derive(Clone)]
pub struct RunLog {
    tx: mpsc::UnboundedSender<String>,
    shared: Arc<Mutex<Shared>>,
    redactor: Arc<Redactor>,
    cap: usize,
}

impl std::fmt::Debug for RunLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunLog").finish_non_exhaustive()
    }
}

/// Waits for a run's log to be fully written.
#[derive(Debug)]
pub struct RunLogWriter {
    task: JoinHandle<()>,
}

impl RunLog {
    /// Starts a log for run `key`.
    pub fn start(store: Arc<dyn Store>, key: String, redactor: Redactor) -> (Self, RunLogWriter) {
        Self::start_with_cap(store, key, redactor, LOG_CAP_BYTES)
    }

    /// Same, with a custom cap (tests).
    pub fn start_with_cap(
        store: Arc<dyn Store>,
        key: String,
        redactor: Redactor,
        cap: usize,
    ) -> (Self, RunLogWriter) {
        let (tx, mut rx) = mpsc::unbounded_channel::<String>();
        let task = tokio::spawn(async move {
            let mut batch = Vec::new();
            while let Some(first) = rx.recv().await {
                batch.push(first);
                while batch.len() < 500 {
                    match rx.try_recv() {
                        Ok(l) => batch.push(l),
                        Err(_) => break,
                    }
                }
                let mut attempt = 0;
                while let Err(e) = store.append_log(&key, &batch).await {
                    attempt += 1;
                    if attempt >= 5 {
                        tracing::error!(error = %e, lines = batch.len(), "dropping log lines: the store is unreachable");
                        break;
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(200 * attempt)).await;
                }
                batch.clear();
            }
        }.instrument(tracing::Span::current()));
        let shared = Arc::new(Mutex::new(Shared {
            tail: VecDeque::new(),
            bytes: 0,
            truncated: false,
        }));
        (
            Self {
                tx,
                shared,
                redactor: Arc::new(redactor),
                cap,
            },
            RunLogWriter { task },
        )
    }

    /// Appends one line (timestamped, redacted). Never blocks.
    pub fn line(&self, text: &str) {
        let text = self.redactor.redact(text.trim_end_matches(['\r', '\n']));
        let stamped = format!("{} {text}", chrono::Utc::now().format("%H:%M:%S%.3f"));
        let mut s = self.shared.lock().expect("log lock");
        s.tail.push_back(text);
        if s.tail.len() > TAIL_LINES {
            s.tail.pop_front();
        }
        if s.truncated {
            return;
        }
        if s.bytes + stamped.len() > self.cap {
            s.truncated = true;
            let _ = self.tx.send(format!(
                "==> log truncated: more than {} bytes; further output is not kept",
                self.cap
            ));
            return;
        }
        s.bytes += stamped.len() + 1;
        let _ = self.tx.send(stamped);
    }

    /// A header line for a step: `==> shell: script/deploy`.
    pub fn header(&self, step: &str, detail: &str) {
        self.line(&format!("==> {step}: {detail}"));
    }

    /// The last lines (untimestamped, redacted), oldest first.
    pub fn tail(&self) -> Vec<String> {
        self.shared
            .lock()
            .expect("log lock")
            .tail
            .iter()
            .cloned()
            .collect()
    }

    /// The last non-empty line that is not a `==>` header, if any.
    pub fn last_output_line(&self) -> Option<String> {
        self.shared
            .lock()
            .expect("log lock")
            .tail
            .iter()
            .rev()
            .find(|l| !l.trim().is_empty() && !l.starts_with("==>"))
            .cloned()
    }

    /// True when output was cut at the cap.
    pub fn truncated(&self) -> bool {
        self.shared.lock().expect("log lock").truncated
    }
}

impl RunLogWriter {
    /// Waits until every line sent before `log` was dropped is in the store.
    pub async fn finish(self, log: RunLog) {
        drop(log);
        let _ = self.task.await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::SqliteStore;

    #[test]
    fn redaction_covers_given_secrets_and_secret_looking_config_keys() {
        let config = serde_json::json!({"api_token": "tok-12345", "nested": {"db_password": "hunter22"},
                                         "keys": ["k-abcdef"], "name": "visible-name"});
        let r = Redactor::new(["ghp_secretvalue".to_owned(), "ab".to_owned()])
            .with_config_secrets(config.as_object().unwrap());
        let out = r.redact("ghp_secretvalue tok-12345 hunter22 k-abcdef visible-name ab");
        assert_eq!(out, "*** *** *** *** visible-name ab");
        assert!(is_secret_key("HEROKU_API_KEY"));
        assert!(!is_secret_key("environments"));
    }

    #[tokio::test]
    async fn lines_reach_the_store_in_order_with_the_cap_noted() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(
            SqliteStore::open(&dir.path().join("l.db"), "q")
                .await
                .unwrap(),
        );
        let (log, writer) = RunLog::start_with_cap(
            store.clone(),
            "o/r/1".into(),
            Redactor::new(["s3cr3t!".to_owned()]),
            60,
        );
        log.header("shell", "script/deploy");
        log.line("hello s3cr3t!");
        for i in 0..10 {
            log.line(&format!("line {i}"));
        }
        assert!(log.truncated());
        assert_eq!(log.last_output_line().as_deref(), Some("line 9"));
        writer.finish(log).await;
        let lines = store.read_log("o/r/1", 0).await.unwrap();
        assert!(lines[0].ends_with("==> shell: script/deploy"), "{lines:?}");
        assert!(lines[1].ends_with("hello ***"), "{lines:?}");
        assert!(lines.last().unwrap().contains("log truncated"), "{lines:?}");
        assert!(lines.len() < 12);
    }
}
