//! A run's log: timestamped, redacted lines written to the store in batches (so every
//! `faseng serve` can show it, live), capped per run with the truncation noted, and a
//! short in-memory tail for failure reports. Output streams are cut into lines of at most
//! [`LINE_MAX_BYTES`] by a [`LineSplitter`], so no line is ever held whole.

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

/// Bytes of one kept tail line at most (the tail is quoted into chat on failure).
pub const TAIL_LINE_MAX_BYTES: usize = 1024;

/// Bytes of one log line at most: longer output lines are split into pieces of this size.
pub const LINE_MAX_BYTES: usize = 64 * 1024;

/// Cuts a byte stream into lines, without their `\n`, of at most `max` bytes: a longer
/// line comes out in `max`-byte pieces (cut before a UTF-8 character that would straddle
/// the cut), so it never holds more than `max` bytes of a line.
#[derive(Debug)]
pub struct LineSplitter {
    pending: Vec<u8>,
    max: usize,
}

impl LineSplitter {
    /// A splitter for lines of at most `max` bytes (at least 4: one UTF-8 character).
    pub fn new(max: usize) -> Self {
        let max = max.max(4);
        Self {
            pending: Vec::with_capacity(max + 1),
            max,
        }
    }

    /// Feeds `input`, handing every line (or piece of one) it completes to `emit`.
    pub fn push(&mut self, mut input: &[u8], mut emit: impl FnMut(&[u8])) {
        while !input.is_empty() {
            // One byte past `max`, so a full piece is known not to end the line.
            let room = self.max + 1 - self.pending.len();
            let window = &input[..input.len().min(room)];
            if let Some(newline) = window.iter().position(|b| *b == b'\n') {
                self.pending.extend_from_slice(&window[..newline]);
                emit(&self.pending);
                self.pending.clear();
                input = &input[newline + 1..];
                continue;
            }
            self.pending.extend_from_slice(window);
            input = &input[window.len()..];
            if self.pending.len() > self.max {
                let cut = utf8_cut(&self.pending, self.max);
                emit(&self.pending[..cut]);
                self.pending.drain(..cut);
            }
        }
    }

    /// Hands the last line, when the stream did not end with `\n`, to `emit`.
    pub fn finish(self, mut emit: impl FnMut(&[u8])) {
        if !self.pending.is_empty() {
            emit(&self.pending);
        }
    }
}

/// The cut at or just before `at` that does not split a UTF-8 character (`at` itself when
/// the bytes there are not UTF-8 anyway). `bytes` is longer than `at`.
fn utf8_cut(bytes: &[u8], at: usize) -> usize {
    let is_continuation = |b: u8| b & 0b1100_0000 == 0b1000_0000;
    (at.saturating_sub(3)..=at)
        .rev()
        .find(|&i| !is_continuation(bytes[i]))
        .filter(|&i| i > 0)
        .unwrap_or(at)
}

/// `text` cut to at most `max` bytes at a character boundary, the cut marked with `…`.
fn cap_line(text: String, max: usize) -> String {
    if text.len() <= max {
        return text;
    }
    let mut end = max.saturating_sub('…'.len_utf8());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let mut capped = text;
    capped.truncate(end);
    capped.push('…');
    capped
}

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

/// The values to redact for a PEM key (`-----BEGIN …-----` blocks): the whole text and each
/// body line, so a key printed line by line is hidden too.
pub fn pem_secrets(pem: &str) -> Vec<String> {
    std::iter::once(pem.trim().to_owned())
        .chain(
            pem.lines()
                .map(str::trim)
                .filter(|l| !l.starts_with("-----") && l.len() >= 8)
                .map(str::to_owned),
        )
        .collect()
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
        s.tail.push_back(cap_line(text, TAIL_LINE_MAX_BYTES));
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
    use proptest::prelude::*;

    use super::*;
    use crate::store::SqliteStore;

    /// What a splitter makes of `input` fed in `chunk`-byte pieces.
    fn split(input: &[u8], max: usize, chunk: usize) -> Vec<Vec<u8>> {
        let mut splitter = LineSplitter::new(max);
        let mut out = Vec::new();
        for piece in input.chunks(chunk.max(1)) {
            splitter.push(piece, |l| out.push(l.to_vec()));
        }
        splitter.finish(|l| out.push(l.to_vec()));
        out
    }

    #[test]
    fn lines_come_out_whole_and_long_ones_in_pieces_of_at_most_max() {
        let lines = |v: Vec<Vec<u8>>| {
            v.into_iter()
                .map(|l| String::from_utf8(l).unwrap())
                .collect::<Vec<_>>()
        };
        assert_eq!(lines(split(b"a\n\nbc\r\nd", 8, 1)), ["a", "", "bc\r", "d"]);
        assert_eq!(
            lines(split(b"0123456789ab\n", 4, 5)),
            ["0123", "4567", "89ab"]
        );
        assert_eq!(lines(split(b"01234\n", 4, 100)), ["0123", "4"]);
        // Never inside a character: "é" is two bytes, so five bytes hold two of them.
        assert_eq!(lines(split("ééééé".as_bytes(), 5, 3)), ["éé", "éé", "é"]);
        assert_eq!(lines(split("€€".as_bytes(), 4, 1)), ["€", "€"]);
        // Bytes that are not UTF-8 are cut at `max`.
        assert_eq!(
            split(&[0x80; 9], 4, 2),
            [vec![0x80; 4], vec![0x80; 4], vec![0x80]]
        );
    }

    proptest! {
        #[test]
        fn splitting_keeps_every_byte_in_order_within_the_bound(
            text in "[a-zé€\n]{0,200}",
            max in 4usize..40,
            chunk in 1usize..50,
        ) {
            let pieces = split(text.as_bytes(), max, chunk);
            for piece in &pieces {
                prop_assert!(piece.len() <= max);
                prop_assert!(!piece.contains(&b'\n'));
                prop_assert!(std::str::from_utf8(piece).is_ok(), "{:?}", piece);
            }
            prop_assert_eq!(pieces.concat(), text.replace('\n', "").into_bytes());
            prop_assert!(pieces.len() >= text.matches('\n').count());
        }
    }

    #[tokio::test]
    async fn a_kept_tail_line_is_capped_but_the_log_has_it_whole() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(
            SqliteStore::open(&dir.path().join("l.db"), "q")
                .await
                .unwrap(),
        );
        let (log, writer) = RunLog::start(store.clone(), "o/r/2".into(), Redactor::default());
        let long = "é".repeat(LINE_MAX_BYTES / 2);
        log.line(&long);
        let tail = log.last_output_line().unwrap();
        assert!(tail.len() <= TAIL_LINE_MAX_BYTES, "{}", tail.len());
        assert!(tail.ends_with('…') && tail.starts_with("éé"));
        writer.finish(log).await;
        let lines = store.read_log("o/r/2", 0).await.unwrap();
        assert!(lines[0].ends_with(&long));
    }

    #[test]
    fn a_pem_key_is_redacted_whole_and_line_by_line() {
        let pem = "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA1x\nshort\n-----END RSA PRIVATE KEY-----\n";
        let r = Redactor::new(pem_secrets(pem));
        assert_eq!(
            r.redact("key line MIIEowIBAAKCAQEA1x here"),
            "key line *** here"
        );
        assert_eq!(r.redact(pem.trim()), "***");
        let secrets = pem_secrets(pem);
        assert!(
            !secrets
                .iter()
                .any(|s| s == "short" || s == "-----END RSA PRIVATE KEY-----"),
            "{secrets:?}"
        );
    }

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
