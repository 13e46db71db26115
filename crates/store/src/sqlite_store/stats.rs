//! Statistics on SQLite: SQL over the history table's counted rows (`faseng_run_history`,
//! kept by triggers; see `HISTORY_SCHEMA`), with window functions for the order within an
//! environment and the nearest-rank percentiles.

use super::*;
use crate::stats::{DayPoint, EnvStats, Stats, StatsQuery};

/// Per environment: deploys, successes, failures, median and p90 duration (ms), change
/// failures, restores, median time to restore (ms). `runs` are the counted runs of app ?1
/// (environment ?2 when not NULL) received in [?3, ?4) ms, in order per environment;
/// `ok_so_far` counts the successes up to each, so the next success after a run is the one
/// whose `ok_so_far` is one more.
pub(super) const ENV_STATS: &str = "WITH
runs AS (
  SELECT environment AS env, at_ms, state, sha, finished_ms, finished_ms - started_ms AS dur,
    LEAD(rollback_from) OVER w AS next_from,
    SUM(state = 'success') OVER w AS ok_so_far
  FROM faseng_run_history
  WHERE counted = 1 AND app = ?1 AND (?2 IS NULL OR environment = ?2) AND at_ms >= ?3 AND at_ms < ?4
  WINDOW w AS (PARTITION BY environment ORDER BY at_ms, key ROWS UNBOUNDED PRECEDING)),
successes AS (SELECT env, ok_so_far AS nth, finished_ms FROM runs WHERE state = 'success'),
change_failures AS (
  SELECT f.env, s.nth IS NOT NULL AS restored, MAX(0, s.finished_ms - f.finished_ms) AS ttr
  FROM runs f LEFT JOIN successes s ON s.env = f.env AND s.nth = f.ok_so_far + 1
  WHERE f.state IN ('failure', 'error') OR f.next_from = f.sha),
durations AS (
  SELECT env, dur, ROW_NUMBER() OVER (PARTITION BY env ORDER BY dur) AS rank,
    COUNT(*) OVER (PARTITION BY env) AS n
  FROM runs WHERE dur IS NOT NULL),
restore_times AS (
  SELECT env, ttr, ROW_NUMBER() OVER (PARTITION BY env ORDER BY ttr) AS rank,
    COUNT(*) OVER (PARTITION BY env) AS n
  FROM change_failures WHERE ttr IS NOT NULL),
counts AS (
  SELECT env, COUNT(*) AS deploys, SUM(state = 'success') AS ok,
    SUM(state IN ('failure', 'error')) AS failed
  FROM runs GROUP BY env),
duration_ranks AS (
  SELECT env, MAX(CASE WHEN rank = (n + 1) / 2 THEN dur END) AS median,
    MAX(CASE WHEN rank = (9 * n + 9) / 10 THEN dur END) AS p90
  FROM durations GROUP BY env),
failure_counts AS (
  SELECT env, COUNT(*) AS change_failures, SUM(restored) AS restores
  FROM change_failures GROUP BY env),
restore_ranks AS (
  SELECT env, MAX(CASE WHEN rank = (n + 1) / 2 THEN ttr END) AS median
  FROM restore_times GROUP BY env)
SELECT c.env, c.deploys, c.ok, c.failed, d.median, d.p90,
  IFNULL(f.change_failures, 0), IFNULL(f.restores, 0), r.median
FROM counts c LEFT JOIN duration_ranks d USING (env) LEFT JOIN failure_counts f USING (env)
  LEFT JOIN restore_ranks r USING (env)
ORDER BY c.env";

/// Per environment and UTC day (days since the epoch) with counted runs: deploys,
/// successes, median and p90 duration (ms).
const DAILY_STATS: &str = "WITH
runs AS (
  SELECT environment AS env, at_ms / 86400000 AS day, state, finished_ms - started_ms AS dur
  FROM faseng_run_history
  WHERE counted = 1 AND app = ?1 AND (?2 IS NULL OR environment = ?2) AND at_ms >= ?3 AND at_ms < ?4),
durations AS (
  SELECT env, day, dur, ROW_NUMBER() OVER (PARTITION BY env, day ORDER BY dur) AS rank,
    COUNT(*) OVER (PARTITION BY env, day) AS n
  FROM runs WHERE dur IS NOT NULL),
duration_ranks AS (
  SELECT env, day, MAX(CASE WHEN rank = (n + 1) / 2 THEN dur END) AS median,
    MAX(CASE WHEN rank = (9 * n + 9) / 10 THEN dur END) AS p90
  FROM durations GROUP BY env, day)
SELECT r.env, r.day, COUNT(*), SUM(r.state = 'success'), d.median, d.p90
FROM runs r LEFT JOIN duration_ranks d ON d.env = r.env AND d.day = r.day
GROUP BY r.env, r.day
ORDER BY r.env, r.day";

/// Milliseconds as seconds.
fn secs(ms: Option<i64>) -> Option<f64> {
    ms.map(|ms| ms as f64 / 1000.0)
}

fn count(n: i64) -> u64 {
    n.max(0) as u64
}

impl SqliteStore {
    /// Runs `sql` with the query's parameters bound as ?1..?4.
    async fn stats_rows(
        &self,
        sql: &'static str,
        q: &StatsQuery,
    ) -> anyhow::Result<Vec<sqlx::sqlite::SqliteRow>> {
        Ok(sqlx::query(sql)
            .bind(&q.app)
            .bind(&q.environment)
            .bind(q.since.timestamp_millis())
            .bind(q.until.timestamp_millis())
            .fetch_all(&self.pool)
            .await?)
    }
}

#[async_trait]
impl Stats for SqliteStore {
    async fn env_stats(&self, q: &StatsQuery) -> anyhow::Result<Vec<EnvStats>> {
        let rows = self.stats_rows(ENV_STATS, q).await?;
        Ok(rows
            .iter()
            .map(|row| EnvStats {
                environment: row.get(0),
                deploys: count(row.get(1)),
                successes: count(row.get(2)),
                failures: count(row.get(3)),
                median_secs: secs(row.get(4)),
                p90_secs: secs(row.get(5)),
                change_failures: count(row.get(6)),
                restores: count(row.get(7)),
                restore_median_secs: secs(row.get(8)),
            })
            .collect())
    }

    async fn daily_stats(&self, q: &StatsQuery) -> anyhow::Result<Vec<(String, Vec<DayPoint>)>> {
        let rows = self.stats_rows(DAILY_STATS, q).await?;
        let mut envs: Vec<(String, Vec<DayPoint>)> = Vec::new();
        for row in &rows {
            let env: String = row.get(0);
            if envs.last().is_none_or(|(last, _)| *last != env) {
                envs.push((env, Vec::new()));
            }
            let day = crate::stats::day_of_index(row.get(1))?;
            envs.last_mut().expect("pushed above").1.push(DayPoint {
                day,
                deploys: count(row.get(2)),
                successes: count(row.get(3)),
                median_secs: secs(row.get(4)),
                p90_secs: secs(row.get(5)),
            });
        }
        Ok(envs
            .into_iter()
            .map(|(env, points)| (env, crate::stats::every_day(q, points)))
            .collect())
    }
}
