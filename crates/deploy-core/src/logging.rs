//! Process logging for both binaries: `LOG_FORMAT=text` (the default: human lines) or `json`
//! (one JSON object per line, for log collectors). With `json`, everything a process writes
//! itself on stdout and stderr goes through here as one object per line: tracing events,
//! start-up banners and fatal errors ([`say`]) and panics (a hook installed by [`init`]).
//! What a user asked for on a terminal (`--help`, `chima shell`'s conversation) stays text.

use std::io::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};

/// The environment variable that chooses the format.
pub const ENV: &str = "LOG_FORMAT";

/// How a process writes its logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line: `timestamp`, `level`, `message`, `target` and the event's
    /// fields at the top level.
    Json,
}

impl std::str::FromStr for LogFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "" | "text" => Ok(Self::Text),
            "json" => Ok(Self::Json),
            _ => Err(format!("{ENV} must be text or json, not {s:?}")),
        }
    }
}

impl LogFormat {
    /// The format asked for by `--log-format VALUE` / `--log-format=VALUE` in `args`, else
    /// by `env` (the value of `LOG_FORMAT`), else text. Read before the command line is
    /// parsed, so that its errors come out in the chosen format; an unknown value gives text
    /// here (and the parse that follows says what is wrong with it).
    pub fn detect(args: impl IntoIterator<Item = String>, env: Option<String>) -> Self {
        let mut args = args.into_iter();
        let mut flag = None;
        while let Some(arg) = args.next() {
            if arg == "--" {
                break;
            }
            if arg == "--log-format" {
                flag = args.next();
            } else if let Some(v) = arg.strip_prefix("--log-format=") {
                flag = Some(v.to_owned());
            }
        }
        flag.or(env)
            .and_then(|v| v.parse().ok())
            .unwrap_or_default()
    }

    /// [`LogFormat::detect`] on this process's arguments and environment.
    pub fn from_process() -> Self {
        Self::detect(std::env::args().skip(1), std::env::var(ENV).ok())
    }
}

/// Where a process's log goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// Standard output (faseng: a service, whose stdout is its log).
    Stdout,
    /// Standard error (chima: `chima shell` talks on stdout).
    Stderr,
}

static JSON: AtomicBool = AtomicBool::new(false);
static TO_STDOUT: AtomicBool = AtomicBool::new(false);

/// Writes one whole line to the log stream.
fn write_log(line: &str) {
    let _ = if TO_STDOUT.load(Ordering::Relaxed) {
        std::io::stdout().lock().write_all(line.as_bytes())
    } else {
        std::io::stderr().lock().write_all(line.as_bytes())
    };
}

/// Installs the process's subscriber, writing to `stream` in `format` at the level
/// `RUST_LOG` asks for (else `default_filter`); with JSON, also a panic hook that logs
/// panics as one JSON line.
pub fn init(format: LogFormat, default_filter: &str, stream: Stream) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter));
    TO_STDOUT.store(stream == Stream::Stdout, Ordering::Relaxed);
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(move || -> Box<dyn std::io::Write> {
            match stream {
                Stream::Stdout => Box::new(std::io::stdout()),
                Stream::Stderr => Box::new(std::io::stderr()),
            }
        });
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => {
            JSON.store(true, Ordering::Relaxed);
            builder
                .json()
                .flatten_event(true)
                .with_current_span(false)
                .init();
            std::panic::set_hook(Box::new(|info| {
                let location = info
                    .location()
                    .map(|l| format!("{}:{}", l.file(), l.line()))
                    .unwrap_or_default();
                let payload = info
                    .payload()
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_owned())
                    .or_else(|| info.payload().downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "(no message)".to_owned());
                let line = json_line(
                    tracing::Level::ERROR,
                    "panic",
                    &format!("panicked: {payload}"),
                    &[("location", location.as_str())],
                );
                write_log(&line);
            }));
        }
    }
}

/// True once [`init`] chose JSON.
pub fn is_json() -> bool {
    JSON.load(Ordering::Relaxed)
}

/// Writes a line the process shows whatever the log filter says (a start-up banner, a fatal
/// error): in text, as is on stderr; in JSON, as one object (shaped like the subscriber's)
/// on the log stream.
pub fn say(level: tracing::Level, target: &str, message: &str) {
    if is_json() {
        write_log(&json_line(level, target, message, &[]));
    } else {
        let mut m = message.to_owned();
        if !m.ends_with('\n') {
            m.push('\n');
        }
        let _ = std::io::stderr().lock().write_all(m.as_bytes());
    }
}

/// One JSON log line (with its newline), as the JSON subscriber writes them.
fn json_line(
    level: tracing::Level,
    target: &str,
    message: &str,
    fields: &[(&str, &str)],
) -> String {
    let mut object = serde_json::Map::new();
    object.insert(
        "timestamp".into(),
        chrono::Utc::now()
            .to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
            .into(),
    );
    object.insert("level".into(), level.as_str().into());
    object.insert("message".into(), message.trim_end().into());
    for (k, v) in fields {
        object.insert((*k).into(), (*v).into());
    }
    object.insert("target".into(), target.into());
    let mut line = serde_json::Value::Object(object).to_string();
    line.push('\n');
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn the_format_comes_from_the_flag_then_the_environment() {
        assert_eq!(LogFormat::detect(args(&["serve"]), None), LogFormat::Text);
        assert_eq!(
            LogFormat::detect(args(&["serve"]), Some("JSON".into())),
            LogFormat::Json
        );
        assert_eq!(
            LogFormat::detect(
                args(&["--log-format", "json", "serve"]),
                Some("text".into())
            ),
            LogFormat::Json
        );
        assert_eq!(
            LogFormat::detect(args(&["serve", "--log-format=text"]), Some("json".into())),
            LogFormat::Text
        );
        // After `--` it is someone else's argument; an unknown value is text until the
        // command line's own parse refuses it.
        assert_eq!(
            LogFormat::detect(args(&["--", "--log-format=json"]), None),
            LogFormat::Text
        );
        assert_eq!(
            LogFormat::detect(args(&[]), Some("yaml".into())),
            LogFormat::Text
        );
        assert!(
            "yaml"
                .parse::<LogFormat>()
                .unwrap_err()
                .contains("text or json")
        );
    }

    #[test]
    fn a_json_line_is_one_object_with_the_message_and_level() {
        let line = json_line(
            tracing::Level::WARN,
            "faseng",
            "two\nlines\n",
            &[("where", "here")],
        );
        assert!(line.ends_with('\n'));
        assert_eq!(line.matches('\n').count(), 1, "{line}");
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["level"], "WARN");
        assert_eq!(v["message"], "two\nlines");
        assert_eq!(v["target"], "faseng");
        assert_eq!(v["where"], "here");
        assert!(v["timestamp"].as_str().unwrap().ends_with('Z'));
    }
}
