//! Helpers for the `bench` program: summaries over repeated measurements and the report files.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;

/// Median and 99th percentile of a set of samples.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Summary {
    /// 50th percentile.
    pub p50: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Number of samples.
    pub n: usize,
}

/// Summarises samples (nearest-rank percentiles). Panics on an empty set.
pub fn summarize(samples: &[f64]) -> Summary {
    assert!(!samples.is_empty(), "no samples");
    let mut sorted = samples.to_vec();
    sorted.sort_by(|a, b| a.total_cmp(b));
    let rank = |p: f64| {
        let i = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
        sorted[i.clamp(1, sorted.len()) - 1]
    };
    Summary {
        p50: rank(50.0),
        p99: rank(99.0),
        n: sorted.len(),
    }
}

/// The median of a non-empty set (the upper middle one for an even count, as nearest-rank).
pub fn median(samples: &[f64]) -> f64 {
    summarize(samples).p50
}

/// Milliseconds of a duration, as a float.
pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Microseconds of a duration, as a float.
pub fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1_000_000.0
}

/// Rounds to 3 significant decimals for reports.
pub fn round(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// Writes `target/bench/<what>.json` and returns its path.
pub fn write_report(what: &str, report: &Value) -> std::io::Result<PathBuf> {
    let dir = crate::bins::workspace_root().join("target/bench");
    std::fs::create_dir_all(&dir)?;
    let path = dir.join(format!("{what}.json"));
    std::fs::write(&path, serde_json::to_string_pretty(report)? + "\n")?;
    Ok(path)
}

/// A markdown table of `(metric, value, target)` rows.
pub fn table(title: &str, rows: &[(&str, String, &str)]) -> String {
    let mut out = format!("### {title}\n\n| metric | measured | target |\n|---|---|---|\n");
    for (metric, value, target) in rows {
        out.push_str(&format!("| {metric} | {value} | {target} |\n"));
    }
    out
}

/// Resident and peak resident memory of a process, in MB, from /proc.
pub fn rss_mb(pid: u32) -> Option<(f64, f64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<f64>().ok())
            .map(|kb| kb / 1024.0)
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_nearest_rank() {
        let samples: Vec<f64> = (1..=100).map(f64::from).collect();
        let s = summarize(&samples);
        assert_eq!((s.p50, s.p99, s.n), (50.0, 99.0, 100));
        let one = summarize(&[7.0]);
        assert_eq!((one.p50, one.p99), (7.0, 7.0));
        let odd = summarize(&[3.0, 1.0, 2.0]);
        assert_eq!(odd.p50, 2.0);
    }

    #[test]
    fn own_memory_is_readable() {
        let (rss, peak) = rss_mb(std::process::id()).expect("/proc is mounted");
        assert!(rss > 0.0 && peak >= rss);
    }
}
