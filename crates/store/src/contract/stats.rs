//! Statistics: what the store computes is what the reference functions compute over the
//! records, for runs written every way a run is written.

use chrono::{DateTime, Utc};

use crate::stats::{compute_daily, compute_env_stats};
use crate::{AcceptItem, RollbackMark, RunRecord, RunState, StatsQuery, Store};

/// A small seeded generator (SplitMix64): the same runs on every backend and every run.
pub struct Seeded(u64);

impl Seeded {
    /// A generator from `seed`.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    /// True with probability `percent`/100.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    /// One of `items`.
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}

/// `n` runs of apps `apps` in `envs` from `start` on, `span_ms` apart at most (some at the
/// same millisecond), to the millisecond: deploys and other tasks, every state, refusals that
/// never started, rollbacks (most from the sha deployed before them), a few without a finish
/// time. Keys are `{prefix}/r/{i}`.
pub fn generated_runs(
    rng: &mut Seeded,
    prefix: &str,
    apps: &[&str],
    envs: &[&str],
    start: DateTime<Utc>,
    n: usize,
    span_ms: u64,
) -> Vec<RunRecord> {
    let shas: Vec<String> = (0..8).map(|i| format!("{i:x}").repeat(40)).collect();
    let mut last_sha: std::collections::HashMap<(String, String), String> = Default::default();
    let mut at = start;
    let mut runs = Vec::with_capacity(n);
    for i in 0..n {
        if !rng.chance(5) {
            at += chrono::Duration::milliseconds(rng.below(span_ms) as i64 + 1);
        }
        let app = (*rng.pick(apps)).to_owned();
        let environment = (*rng.pick(envs)).to_owned();
        let task = match rng.below(20) {
            0 => "deploy:lock",
            1 => "deploy:unlock",
            2 => "deploy:migrate",
            3 => "migrate",
            _ => "deploy",
        };
        let state = match rng.below(20) {
            0 => RunState::Queued,
            1 => RunState::InProgress,
            2..=4 => RunState::Failure,
            5 => RunState::Error,
            _ => RunState::Success,
        };
        let sha = rng.pick(&shas).clone();
        let line = (app.clone(), environment.clone());
        let rollback = rng.chance(25).then(|| RollbackMark {
            from: match last_sha.get(&line) {
                Some(prev) if rng.chance(85) => prev.clone(),
                _ => rng.pick(&shas).clone(),
            },
            to: sha.clone(),
        });
        let refused = state == RunState::Error && rng.chance(50);
        let started_at = (state != RunState::Queued && !refused)
            .then(|| at + chrono::Duration::milliseconds(rng.below(120_000) as i64));
        let finished_at = started_at
            .filter(|_| state.is_final() && !rng.chance(3))
            .map(|s| s + chrono::Duration::milliseconds(rng.below(1_800_000) as i64));
        if crate::stats::counted_task(task) && state.is_final() && started_at.is_some() {
            last_sha.insert(line, sha.clone());
        }
        runs.push(RunRecord {
            key: format!("{prefix}/r/{i}"),
            repo: format!("{prefix}/r"),
            deployment_id: i as u64,
            app,
            environment,
            task: task.into(),
            sha,
            state,
            received_at: at,
            started_at,
            finished_at,
            rollback,
            ..super::run("x")
        });
    }
    runs
}

/// Writes `runs` every way a run is written (accepted then finished, created, overwritten,
/// finished through the outbox) and deletes a few again; returns the runs the store keeps.
pub async fn write_runs(store: &dyn Store, runs: Vec<RunRecord>) -> Vec<RunRecord> {
    let mut kept = Vec::with_capacity(runs.len());
    for (i, run) in runs.into_iter().enumerate() {
        match i % 5 {
            0 => {
                let item = AcceptItem {
                    delivery_id: format!("stats-{}", run.key),
                    run: RunRecord {
                        state: RunState::Queued,
                        started_at: None,
                        finished_at: None,
                        stages: Vec::new(),
                        ..run.clone()
                    },
                    line: format!("{}/{}", run.app, run.environment),
                    job: "{}".into(),
                };
                assert!(store.accept_runs(&[item]).await.unwrap()[0].created);
                store.put_run(&run).await.unwrap();
            }
            1 => assert!(store.create_run(&run).await.unwrap()),
            2 => {
                let queued = RunRecord {
                    state: RunState::Queued,
                    finished_at: None,
                    ..run.clone()
                };
                store.put_run(&queued).await.unwrap();
                store.put_run(&run).await.unwrap();
            }
            3 => assert!(store.finish_run(&run, None, &[]).await.unwrap()),
            _ => {
                assert!(store.create_run(&run).await.unwrap());
                if i % 15 == 4 {
                    store.delete_run(&run.key).await.unwrap();
                    continue;
                }
            }
        }
        kept.push(run);
    }
    kept
}

/// The figures of a small, pinned history written every way, then of a few hundred
/// generated runs on many windows: always what [`compute_env_stats`] and [`compute_daily`]
/// make of the records.
pub async fn stats(store: &dyn Store) {
    let t0: DateTime<Utc> = "2026-03-01T00:00:00Z".parse().unwrap();
    let hours = |h: i64| t0 + chrono::Duration::hours(h);

    // Pinned: a deploy, a failure, a rollback after a success.
    let deploy = |id: u64, h: i64, state: RunState, sha: &str| RunRecord {
        key: RunRecord::key_for("pin/r", id),
        deployment_id: id,
        app: "pinned".into(),
        environment: "staging".into(),
        sha: sha.into(),
        state,
        received_at: hours(h),
        started_at: Some(hours(h)),
        finished_at: Some(hours(h) + chrono::Duration::seconds(60 * id as i64)),
        ..super::run("x")
    };
    let pinned = write_runs(
        store,
        vec![
            deploy(1, 1, RunState::Success, "a"),
            deploy(2, 2, RunState::Failure, "b"),
            deploy(3, 3, RunState::Success, "c"),
            RunRecord {
                rollback: Some(RollbackMark {
                    from: "c".into(),
                    to: "a".into(),
                }),
                ..deploy(4, 4, RunState::Success, "a")
            },
            RunRecord {
                task: "deploy:lock".into(),
                ..deploy(5, 5, RunState::Success, "a")
            },
        ],
    )
    .await;
    let q = StatsQuery {
        app: "pinned".into(),
        environment: None,
        since: t0,
        until: hours(48),
    };
    let stats = store.env_stats(&q).await.unwrap();
    assert_eq!(stats, compute_env_stats(&pinned, &q));
    assert_eq!(stats.len(), 1);
    let s = &stats[0];
    assert_eq!(
        (
            s.deploys,
            s.successes,
            s.failures,
            s.change_failures,
            s.restores
        ),
        (4, 3, 1, 2, 2)
    );
    assert_eq!((s.median_secs, s.p90_secs), (Some(120.0), Some(240.0)));
    // 2 (finished 02:02) restored by 3 (03:03); 3 (03:03) by 4 (04:04).
    assert_eq!(s.restore_median_secs, Some(3660.0));
    let daily = store.daily_stats(&q).await.unwrap();
    assert_eq!(daily, compute_daily(&pinned, &q));
    assert_eq!(daily[0].1.len(), 2);
    assert_eq!(daily[0].1[0].deploys, 4);
    assert_eq!(daily[0].1[1].deploys, 0);
    assert!(
        store
            .env_stats(&StatsQuery {
                app: "nothing".into(),
                ..q.clone()
            })
            .await
            .unwrap()
            .is_empty()
    );

    // Generated: 400 runs over about 60 days, two apps, three environments.
    let mut rng = Seeded::new(17);
    let runs = generated_runs(
        &mut rng,
        "gen",
        &["gen", "other"],
        &["edge", "staging", "production"],
        t0,
        400,
        4 * 3_600_000 * 3,
    );
    let end = runs.last().unwrap().received_at;
    let runs = write_runs(store, runs).await;
    // The generated history has what the definitions are about.
    let whole = StatsQuery {
        app: "gen".into(),
        environment: None,
        since: t0,
        until: end + chrono::Duration::milliseconds(1),
    };
    let all = compute_env_stats(&runs, &whole);
    assert_eq!(all.len(), 3);
    for s in &all {
        assert!(s.deploys > 30 && s.failures > 3, "{s:?}");
        assert!(s.change_failures > s.failures, "rolled back runs: {s:?}");
        assert!(s.restores > 3 && s.restore_median_secs.is_some(), "{s:?}");
    }
    let mut windows = vec![(t0, end + chrono::Duration::milliseconds(1)), (t0, t0)];
    let span = (end - t0).num_milliseconds() as u64;
    for _ in 0..30 {
        let a = t0 + chrono::Duration::milliseconds(rng.below(span) as i64);
        let b = t0 + chrono::Duration::milliseconds(rng.below(span) as i64);
        windows.push((a.min(b), a.max(b)));
    }
    // Whole days, and windows that start or end exactly on a run.
    windows.push((
        t0 + chrono::Duration::days(7),
        t0 + chrono::Duration::days(37),
    ));
    let some = &runs[runs.len() / 3];
    windows.push((
        some.received_at,
        some.received_at + chrono::Duration::days(9),
    ));
    windows.push((t0 - chrono::Duration::days(3), some.received_at));
    for (since, until) in windows {
        for environment in [None, Some("staging"), Some("nowhere")] {
            let q = StatsQuery {
                app: "gen".into(),
                environment: environment.map(Into::into),
                since,
                until,
            };
            assert_eq!(
                store.env_stats(&q).await.unwrap(),
                compute_env_stats(&runs, &q),
                "{q:?}"
            );
            assert_eq!(
                store.daily_stats(&q).await.unwrap(),
                compute_daily(&runs, &q),
                "{q:?}"
            );
        }
    }

    // Retention takes swept runs out of the figures.
    let cutoff = t0 + chrono::Duration::days(20);
    let swept = store.sweep(cutoff).await.unwrap();
    let left: Vec<RunRecord> = runs
        .iter()
        .filter(|r| !crate::expired(r, cutoff))
        .cloned()
        .collect();
    assert!(swept.runs > 50, "{swept:?}");
    let q = StatsQuery {
        app: "gen".into(),
        environment: None,
        since: t0,
        until: end + chrono::Duration::milliseconds(1),
    };
    assert_eq!(
        store.env_stats(&q).await.unwrap(),
        compute_env_stats(&left, &q)
    );
    assert_eq!(
        store.daily_stats(&q).await.unwrap(),
        compute_daily(&left, &q)
    );
}
