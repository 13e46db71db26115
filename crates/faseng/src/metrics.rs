//! Prometheus metrics, kept in atomics and rendered as text.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

/// Webhook outcomes counted.
pub const WEBHOOK_OUTCOMES: [&str; 7] = [
    "accepted",
    "duplicate",
    "rejected",
    "ping",
    "recorded",
    "ignored",
    "unavailable",
];
/// Run outcomes counted.
pub const RUN_OUTCOMES: [&str; 3] = ["success", "failure", "error"];
/// Run duration histogram buckets, seconds.
pub const BUCKETS: [f64; 10] = [
    1.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0,
];

/// Process-wide counters.
#[derive(Debug, Default)]
pub struct Metrics {
    webhooks: [AtomicU64; 7],
    runs: [AtomicU64; 3],
    buckets: [AtomicU64; 10],
    duration_count: AtomicU64,
    duplicate_jobs: AtomicU64,
    recovered_runs: AtomicU64,
    abandoned_runs: AtomicU64,
    requeued_heads: AtomicU64,
    duration_sum_ms: AtomicU64,
    reconciled: AtomicU64,
    outbox: OutboxMetrics,
}

/// What the outbox's poster counts (see [`crate::poster`]).
#[derive(Debug, Default)]
struct OutboxMetrics {
    status_failures: AtomicU64,
    chat_failures: AtomicU64,
    abandoned: AtomicU64,
    /// Entries waiting, as the poster last read it (shown once `depth_known`).
    depth: AtomicU64,
    depth_known: std::sync::atomic::AtomicBool,
}

impl Metrics {
    /// Counts a webhook outcome (one of [`WEBHOOK_OUTCOMES`]).
    pub fn webhook(&self, outcome: &str) {
        if let Some(i) = WEBHOOK_OUTCOMES.iter().position(|o| *o == outcome) {
            self.webhooks[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Counts a finished run (one of [`RUN_OUTCOMES`]) and its duration.
    pub fn run(&self, outcome: &str, secs: Option<f64>) {
        if let Some(i) = RUN_OUTCOMES.iter().position(|o| *o == outcome) {
            self.runs[i].fetch_add(1, Ordering::Relaxed);
        }
        if let Some(s) = secs {
            for (i, b) in BUCKETS.iter().enumerate() {
                if s <= *b {
                    self.buckets[i].fetch_add(1, Ordering::Relaxed);
                }
            }
            self.duration_count.fetch_add(1, Ordering::Relaxed);
            self.duration_sum_ms
                .fetch_add((s * 1000.0) as u64, Ordering::Relaxed);
        }
    }

    /// Counts a queue job dropped because its run was started by another job.
    pub fn duplicate_job(&self) {
        self.duplicate_jobs.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a status post (or check) that failed, for whatever reason.
    pub fn status_post_failed(&self) {
        self.outbox.status_failures.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a chat call that failed, for whatever reason.
    pub fn chat_post_failed(&self) {
        self.outbox.chat_failures.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts an outbox entry given up on (undelivered after its time).
    pub fn outbox_abandoned(&self) {
        self.outbox.abandoned.fetch_add(1, Ordering::Relaxed);
    }

    /// Sets the outbox depth gauge (entries waiting in the store).
    pub fn set_outbox_depth(&self, depth: u64) {
        self.outbox.depth.store(depth, Ordering::Relaxed);
        self.outbox.depth_known.store(true, Ordering::Relaxed);
    }

    /// Counts a run taken over from a worker that stopped answering (to be reported).
    pub fn recovered_run(&self) {
        self.recovered_runs.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a run this process stopped because another worker took its lease.
    pub fn abandoned_run(&self) {
        self.abandoned_runs.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a line head whose job was lost and was queued again.
    pub fn requeued_head(&self) {
        self.requeued_heads.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a deployment found by reconciling with GitHub (its webhook never came) and queued.
    pub fn reconciled(&self) {
        self.reconciled.fetch_add(1, Ordering::Relaxed);
    }

    /// Prometheus text exposition; `queue_depth` is sampled by the caller.
    pub fn render(&self, queue_depth: Option<u64>) -> String {
        let mut out = String::new();
        out.push_str("# HELP faseng_webhooks_total Webhook deliveries by outcome.\n# TYPE faseng_webhooks_total counter\n");
        for (i, o) in WEBHOOK_OUTCOMES.iter().enumerate() {
            let _ = writeln!(
                out,
                "faseng_webhooks_total{{outcome=\"{o}\"}} {}",
                self.webhooks[i].load(Ordering::Relaxed)
            );
        }
        out.push_str("# HELP faseng_runs_total Finished deployment runs by outcome (this process).\n# TYPE faseng_runs_total counter\n");
        for (i, o) in RUN_OUTCOMES.iter().enumerate() {
            let _ = writeln!(
                out,
                "faseng_runs_total{{outcome=\"{o}\"}} {}",
                self.runs[i].load(Ordering::Relaxed)
            );
        }
        out.push_str("# HELP faseng_run_duration_seconds Provider run duration.\n# TYPE faseng_run_duration_seconds histogram\n");
        for (i, b) in BUCKETS.iter().enumerate() {
            let _ = writeln!(
                out,
                "faseng_run_duration_seconds_bucket{{le=\"{b}\"}} {}",
                self.buckets[i].load(Ordering::Relaxed)
            );
        }
        let count = self.duration_count.load(Ordering::Relaxed);
        let _ = writeln!(
            out,
            "faseng_run_duration_seconds_bucket{{le=\"+Inf\"}} {count}"
        );
        let _ = writeln!(
            out,
            "faseng_run_duration_seconds_sum {}",
            self.duration_sum_ms.load(Ordering::Relaxed) as f64 / 1000.0
        );
        let _ = writeln!(out, "faseng_run_duration_seconds_count {count}");
        out.push_str("# HELP faseng_duplicate_jobs_total Queue jobs dropped because another job ran their deployment.\n# TYPE faseng_duplicate_jobs_total counter\n");
        let _ = writeln!(
            out,
            "faseng_duplicate_jobs_total {}",
            self.duplicate_jobs.load(Ordering::Relaxed)
        );
        for (name, help, value) in [
            (
                "faseng_runs_recovered_total",
                "Runs taken over from a worker that stopped answering, and reported.",
                &self.recovered_runs,
            ),
            (
                "faseng_runs_abandoned_total",
                "Runs this process stopped because another worker took their lease.",
                &self.abandoned_runs,
            ),
            (
                "faseng_line_heads_requeued_total",
                "Runs at the head of their line whose queue job was lost, queued again.",
                &self.requeued_heads,
            ),
        ] {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}",
                value.load(Ordering::Relaxed)
            );
        }
        out.push_str("# HELP faseng_reconciled_total Deployments found by reconciling with GitHub (their webhook never came) and queued by this process.\n# TYPE faseng_reconciled_total counter\n");
        let _ = writeln!(
            out,
            "faseng_reconciled_total {}",
            self.reconciled.load(Ordering::Relaxed)
        );
        if let Some(d) = queue_depth {
            out.push_str("# HELP faseng_queue_depth Jobs waiting in the queue.\n# TYPE faseng_queue_depth gauge\n");
            let _ = writeln!(out, "faseng_queue_depth {d}");
        }
        self.render_outbox(&mut out);
        out
    }

    fn render_outbox(&self, out: &mut String) {
        let o = &self.outbox;
        out.push_str("# HELP faseng_status_posts_failed_total Deployment status posts (and checks) that failed, retried or not.\n# TYPE faseng_status_posts_failed_total counter\n");
        let _ = writeln!(
            out,
            "faseng_status_posts_failed_total {}",
            o.status_failures.load(Ordering::Relaxed)
        );
        out.push_str("# HELP faseng_chat_posts_failed_total Chat calls (message edits, replies) that failed, retried or not.\n# TYPE faseng_chat_posts_failed_total counter\n");
        let _ = writeln!(
            out,
            "faseng_chat_posts_failed_total {}",
            o.chat_failures.load(Ordering::Relaxed)
        );
        out.push_str("# HELP faseng_outbox_abandoned_total Outbox entries given up on, undelivered after 24 hours.\n# TYPE faseng_outbox_abandoned_total counter\n");
        let _ = writeln!(
            out,
            "faseng_outbox_abandoned_total {}",
            o.abandoned.load(Ordering::Relaxed)
        );
        if o.depth_known.load(Ordering::Relaxed) {
            out.push_str("# HELP faseng_outbox_depth Statuses and chat updates waiting to be delivered (all processes).\n# TYPE faseng_outbox_depth gauge\n");
            let _ = writeln!(
                out,
                "faseng_outbox_depth {}",
                o.depth.load(Ordering::Relaxed)
            );
        }
    }
}

/// The store gauges (`faseng_store_runs`, `faseng_store_log_bytes`), Prometheus text.
pub fn render_store_size(size: &crate::store::StoreSize) -> String {
    format!(
        "# HELP faseng_store_runs Deployment runs kept in the store (FASENG_RETENTION_DAYS bounds them).\n\
         # TYPE faseng_store_runs gauge\n\
         faseng_store_runs {}\n\
         # HELP faseng_store_log_bytes Bytes of run logs kept in the store.\n\
         # TYPE faseng_store_log_bytes gauge\n\
         faseng_store_log_bytes {}\n",
        size.runs, size.log_bytes
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_gauges_render() {
        let text = render_store_size(&crate::store::StoreSize {
            runs: 12,
            log_bytes: 3456,
        });
        assert!(text.contains("# TYPE faseng_store_runs gauge\nfaseng_store_runs 12\n"));
        assert!(
            text.contains("# TYPE faseng_store_log_bytes gauge\nfaseng_store_log_bytes 3456\n")
        );
    }

    #[test]
    fn counters_and_histogram_render() {
        let m = Metrics::default();
        m.webhook("accepted");
        m.webhook("accepted");
        m.webhook("rejected");
        m.webhook("nonsense");
        m.run("success", Some(4.0));
        m.run("error", None);
        m.duplicate_job();
        m.recovered_run();
        m.requeued_head();
        m.requeued_head();
        m.reconciled();
        let text = m.render(Some(3));
        assert!(text.contains("faseng_webhooks_total{outcome=\"accepted\"} 2"));
        assert!(text.contains("faseng_webhooks_total{outcome=\"rejected\"} 1"));
        assert!(text.contains("faseng_runs_total{outcome=\"success\"} 1"));
        assert!(text.contains("faseng_runs_total{outcome=\"error\"} 1"));
        assert!(text.contains("faseng_run_duration_seconds_bucket{le=\"1\"} 0"));
        assert!(text.contains("faseng_run_duration_seconds_bucket{le=\"5\"} 1"));
        assert!(text.contains("faseng_run_duration_seconds_count 1"));
        assert!(text.contains("faseng_queue_depth 3"));
        assert!(text.contains("faseng_duplicate_jobs_total 1"));
        assert!(text.contains("faseng_runs_recovered_total 1"));
        assert!(text.contains("faseng_runs_abandoned_total 0"));
        assert!(text.contains("faseng_line_heads_requeued_total 2"));
        assert!(text.contains("faseng_reconciled_total 1"));
        assert!(!text.contains("faseng_outbox_depth"), "unknown until read");
    }

    #[test]
    fn outbox_counters_and_depth_render() {
        let m = Metrics::default();
        m.status_post_failed();
        m.status_post_failed();
        m.chat_post_failed();
        m.outbox_abandoned();
        m.set_outbox_depth(5);
        let text = m.render(None);
        assert!(
            text.contains("faseng_status_posts_failed_total 2"),
            "{text}"
        );
        assert!(text.contains("faseng_chat_posts_failed_total 1"), "{text}");
        assert!(text.contains("faseng_outbox_abandoned_total 1"), "{text}");
        assert!(
            text.contains("# TYPE faseng_outbox_depth gauge\nfaseng_outbox_depth 5"),
            "{text}"
        );
    }
}
