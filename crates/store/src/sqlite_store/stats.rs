//! Statistics on SQLite: SQL over the history table's counted rows (`faseng_run_history`,
//! kept by triggers; see `HISTORY_SCHEMA`), through its covering index of counted runs.

use super::*;
use crate::stats::{DayPoint, EnvStats, Stats, StatsQuery};

/// Per environment: deploys, successes, failures, median and p90 duration (ms), change
/// failures, restores, median time to restore (ms).
///
/// `runs` are the counted runs of app ?1 (environment ?2 when not NULL) received in
/// [?3, ?4) ms, read from the covering index `faseng_run_history_counted` (named: the planner
/// would rather take the history's index by time, and fetch every row from the table). A rollback's
/// predecessor (the counted run just before it in its environment, within the period) and a
/// change failure's next success (the first after it, within the period) are each one seek
/// in that index, ordered as the definition orders runs (received ms, then key). The
/// percentiles are nearest rank over a window ranking.
pub(super) const ENV_STATS: &str = "WITH
runs AS (
  SELECT environment AS env, at_ms, key, state, sha, finished_ms,
    finished_ms - started_ms AS dur, rollback_from
  FROM faseng_run_history INDEXED BY faseng_run_history_counted
  WHERE counted = 1 AND app = ?1 AND (?2 IS NULL OR environment = ?2)
    AND at_ms >= ?3 AND at_ms < ?4),
rolled_back AS (
  SELECT (SELECT p.key FROM faseng_run_history p
      WHERE p.counted = 1 AND p.app = ?1 AND p.environment = r.env AND p.at_ms >= ?3
        AND (p.at_ms, p.key) < (r.at_ms, r.key)
      ORDER BY p.at_ms DESC, p.key DESC LIMIT 1) AS key,
    r.rollback_from AS sha
  FROM runs r WHERE r.rollback_from IS NOT NULL),
change_failures AS (
  SELECT f.env, f.finished_ms,
    (SELECT IFNULL(s.finished_ms, 'none') FROM faseng_run_history s
      WHERE s.counted = 1 AND s.app = ?1 AND s.environment = f.env AND s.at_ms < ?4
        AND (s.at_ms, s.key) > (f.at_ms, f.key) AND s.state = 'success'
      ORDER BY s.at_ms, s.key LIMIT 1) AS fixed
  FROM runs f
  WHERE f.state IN ('failure', 'error') OR (f.key, f.sha) IN (SELECT key, sha FROM rolled_back)),
restores AS (
  SELECT env, fixed IS NOT NULL AS restored,
    CASE WHEN typeof(fixed) = 'integer' THEN MAX(0, fixed - finished_ms) END AS ttr
  FROM change_failures),
counts AS (
  SELECT env, COUNT(*) AS deploys, SUM(state = 'success') AS ok,
    SUM(state IN ('failure', 'error')) AS failed, COUNT(dur) AS timed
  FROM runs GROUP BY env),
durations AS (
  SELECT env, dur, ROW_NUMBER() OVER (PARTITION BY env ORDER BY dur) AS rank
  FROM runs WHERE dur IS NOT NULL),
duration_ranks AS (
  SELECT env, MAX(CASE WHEN rank = (c.timed + 1) / 2 THEN dur END) AS median,
    MAX(CASE WHEN rank = (9 * c.timed + 9) / 10 THEN dur END) AS p90
  FROM durations JOIN counts c USING (env) GROUP BY env),
failure_counts AS (
  SELECT env, COUNT(*) AS change_failures, SUM(restored) AS restored, COUNT(ttr) AS timed
  FROM restores GROUP BY env),
restore_times AS (
  SELECT env, ttr, ROW_NUMBER() OVER (PARTITION BY env ORDER BY ttr) AS rank
  FROM restores WHERE ttr IS NOT NULL),
restore_ranks AS (
  SELECT env, MAX(CASE WHEN rank = (f.timed + 1) / 2 THEN ttr END) AS median
  FROM restore_times JOIN failure_counts f USING (env) GROUP BY env)
SELECT c.env, c.deploys, c.ok, c.failed, d.median, d.p90,
  IFNULL(f.change_failures, 0), IFNULL(f.restored, 0), r.median
FROM counts c LEFT JOIN failure_counts f USING (env) LEFT JOIN duration_ranks d USING (env)
  LEFT JOIN restore_ranks r USING (env)
ORDER BY c.env";

/// Per environment and UTC day (days since the epoch) with counted runs: deploys,
/// successes, median and p90 duration (ms). One window ranks each day's durations (runs
/// without one last) and counts them.
const DAILY_STATS: &str = "WITH
runs AS (
  SELECT environment AS env, at_ms / 86400000 AS day, state, finished_ms - started_ms AS dur
  FROM faseng_run_history INDEXED BY faseng_run_history_counted
  WHERE counted = 1 AND app = ?1 AND (?2 IS NULL OR environment = ?2)
    AND at_ms >= ?3 AND at_ms < ?4),
ranked AS (
  SELECT env, day, state, dur, ROW_NUMBER() OVER w AS rank, COUNT(dur) OVER w AS timed
  FROM runs
  WINDOW w AS (PARTITION BY env, day ORDER BY dur IS NULL, dur
    ROWS BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING))
SELECT env, day, COUNT(*), SUM(state = 'success'),
  MAX(CASE WHEN dur IS NOT NULL AND rank = (timed + 1) / 2 THEN dur END),
  MAX(CASE WHEN dur IS NOT NULL AND rank = (9 * timed + 9) / 10 THEN dur END)
FROM ranked GROUP BY env, day ORDER BY env, day";

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
