//! Statistics on Redis: per app and environment a sorted set of its counted runs
//! (`faseng:stats:{len(app)}:{app}:{env}`, score = received ms, member = the run in short:
//! state, start and finish ms, sha, rollback's `from`, key), the environments of each app
//! (`faseng:stats_envs:{app}`), and each run's member (`faseng:stats_members`, hash: run key
//! → `{len(set)}:{set}{member}`, so a rewrite replaces it). Kept by whoever writes a run record (the scripts' `index_stats`), emptied by
//! retention and deletes (`unindex_stats`); a period is one range read per environment.

use std::collections::BTreeMap;

use super::*;
use crate::stats::{DayPoint, EnvStats, Stats, StatsQuery, counted_run, day_of_index};

/// Set once the runs written before the statistics' sets existed are in them.
pub(super) const STATS_INDEXED: &str = "faseng:stats_indexed";

/// Keeping the statistics' sets: defines `index_stats(key, set, envs, env, score, member)`
/// (a `set` of `''` only takes the run out) and `unindex_stats(key)`.
pub(super) const STATS_FN: &str = r"
local function unindex_stats(key)
  local old = redis.call('HGET', 'faseng:stats_members', key)
  if old then
    local colon = string.find(old, ':', 1, true)
    local len = tonumber(string.sub(old, 1, colon - 1))
    redis.call('ZREM', string.sub(old, colon + 1, colon + len), string.sub(old, colon + len + 1))
    redis.call('HDEL', 'faseng:stats_members', key)
  end
end
local function index_stats(key, set, envs, env, score, member)
  unindex_stats(key)
  if set ~= '' then
    redis.call('ZADD', set, score, member)
    redis.call('HSET', 'faseng:stats_members', key, #set .. ':' .. set .. member)
    redis.call('SADD', envs, env)
  end
end
";

/// Indexes runs whose records are still as read. ARGV: per run, its key, record as read,
/// then the five [`stats_args`].
const INDEX_IF_SAME: &str = r"
for i = 1, #ARGV, 7 do
  if redis.call('GET', 'faseng:run:' .. ARGV[i]) == ARGV[i + 1] then
    index_stats(ARGV[i], ARGV[i + 2], ARGV[i + 3], ARGV[i + 4], ARGV[i + 5], ARGV[i + 6])
  end
end
return 1";

fn index_if_same() -> &'static redis::Script {
    static SCRIPT: std::sync::OnceLock<redis::Script> = std::sync::OnceLock::new();
    SCRIPT.get_or_init(|| redis::Script::new(&format!("#!lua\n{STATS_FN}\n{INDEX_IF_SAME}")))
}

fn stats_set(app: &str, environment: &str) -> String {
    format!("faseng:stats:{}:{app}:{environment}", app.len())
}

fn stats_envs(app: &str) -> String {
    format!("faseng:stats_envs:{app}")
}

/// `%` and `|` escaped, so a member splits at `|` (equal texts stay equal).
fn escape(text: &str) -> String {
    text.replace('%', "%25").replace('|', "%7C")
}

/// What `index_stats` takes for `run`: its set (`''` when it does not count), the app's
/// environments, its environment, its score and its member.
pub(super) fn stats_args(run: &RunRecord) -> [String; 5] {
    if !counted_run(run) {
        return Default::default();
    }
    let state = match run.state {
        RunState::Success => "s",
        RunState::Failure => "f",
        _ => "e",
    };
    let ms =
        |t: Option<DateTime<Utc>>| t.map_or_else(String::new, |t| t.timestamp_millis().to_string());
    let from = run
        .rollback
        .as_ref()
        .map_or_else(String::new, |r| format!("={}", escape(&r.from)));
    [
        stats_set(&run.app, &run.environment),
        stats_envs(&run.app),
        run.environment.clone(),
        run.received_ms().to_string(),
        format!(
            "{state}|{}|{}|{}|{from}|{}",
            ms(run.started_at),
            ms(run.finished_at),
            escape(&run.sha),
            run.key
        ),
    ]
}

/// A counted run as its member tells it.
#[derive(Debug)]
struct Member<'a> {
    at_ms: i64,
    key: &'a str,
    state: u8,
    started_ms: i64,
    finished_ms: Option<i64>,
    sha: &'a str,
    /// The rollback's `from` (escaped, with a leading `=`), or `""`.
    from: &'a str,
}

impl<'a> Member<'a> {
    fn parse(text: &'a str, score: f64) -> anyhow::Result<Self> {
        let bad = || anyhow::anyhow!("a statistics member that cannot be read: {text:?}");
        let mut parts = text.splitn(6, '|');
        let mut next = || parts.next().ok_or_else(bad);
        let state = next()?.bytes().next().ok_or_else(bad)?;
        let started_ms = next()?.parse().map_err(|_| bad())?;
        let finished = next()?;
        let finished_ms = if finished.is_empty() {
            None
        } else {
            Some(finished.parse().map_err(|_| bad())?)
        };
        Ok(Member {
            at_ms: score as i64,
            state,
            started_ms,
            finished_ms,
            sha: next()?,
            from: next()?,
            key: next()?,
        })
    }

    fn duration_ms(&self) -> Option<i64> {
        Some(self.finished_ms? - self.started_ms)
    }

    fn rolls_back(&self, earlier: &Member<'_>) -> bool {
        self.from.strip_prefix('=') == Some(earlier.sha)
    }
}

/// Durations as sorted seconds' median and p90.
fn percentiles(ms: Vec<i64>) -> (Option<f64>, Option<f64>) {
    crate::stats::percentiles(ms.into_iter().map(|ms| ms as f64 / 1000.0).collect())
}

/// The figures of one environment's counted runs, in order.
fn env_figures(environment: String, runs: &[Member<'_>]) -> EnvStats {
    let failed = |m: &Member<'_>| m.state != b's';
    // The finish of the first success after each run (`Some(None)`: a success without one).
    let mut next_success: Vec<Option<Option<i64>>> = vec![None; runs.len()];
    let mut seen: Option<Option<i64>> = None;
    for (i, m) in runs.iter().enumerate().rev() {
        next_success[i] = seen;
        if m.state == b's' {
            seen = Some(m.finished_ms);
        }
    }
    let mut change_failures = 0;
    let mut restores = 0;
    let mut restore_ms = Vec::new();
    for (i, m) in runs.iter().enumerate() {
        let rolled_back = runs.get(i + 1).is_some_and(|next| next.rolls_back(m));
        if !(failed(m) || rolled_back) {
            continue;
        }
        change_failures += 1;
        if let Some(fixed) = next_success[i] {
            restores += 1;
            if let (Some(fixed), Some(broke)) = (fixed, m.finished_ms) {
                restore_ms.push((fixed - broke).max(0));
            }
        }
    }
    let (median_secs, p90_secs) =
        percentiles(runs.iter().filter_map(Member::duration_ms).collect());
    let (restore_median_secs, _) = percentiles(restore_ms);
    let successes = runs.iter().filter(|m| !failed(m)).count() as u64;
    EnvStats {
        environment,
        deploys: runs.len() as u64,
        successes,
        failures: runs.len() as u64 - successes,
        median_secs,
        p90_secs,
        change_failures,
        restores,
        restore_median_secs,
    }
}

/// One environment's runs per UTC day, as points (days with runs only).
fn day_points(runs: &[Member<'_>]) -> anyhow::Result<Vec<DayPoint>> {
    let mut days: BTreeMap<i64, (u64, u64, Vec<i64>)> = BTreeMap::new();
    for m in runs {
        let day = days.entry(m.at_ms.div_euclid(86_400_000)).or_default();
        day.0 += 1;
        day.1 += u64::from(m.state == b's');
        day.2.extend(m.duration_ms());
    }
    days.into_iter()
        .map(|(day, (deploys, successes, durations))| {
            let (median_secs, p90_secs) = percentiles(durations);
            Ok(DayPoint {
                day: day_of_index(day)?,
                deploys,
                successes,
                median_secs,
                p90_secs,
            })
        })
        .collect()
}

impl RedisStore {
    /// Per environment of `q` with counted runs in its period (sorted by name), the members
    /// and scores of those runs.
    async fn stats_members(
        &self,
        q: &StatsQuery,
    ) -> anyhow::Result<Vec<(String, Vec<(String, f64)>)>> {
        self.index_stats_once()
            .await
            .context("indexing runs written before the statistics")?;
        let mut envs: Vec<String> = match &q.environment {
            Some(env) => vec![env.clone()],
            None => self.conn().smembers(stats_envs(&q.app)).await?,
        };
        envs.sort();
        if envs.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for env in &envs {
            pipe.cmd("ZRANGEBYSCORE")
                .arg(stats_set(&q.app, env))
                .arg(q.since.timestamp_millis())
                .arg(format!("({}", q.until.timestamp_millis()))
                .arg("WITHSCORES");
        }
        let found: Vec<Vec<(String, f64)>> = pipe.query_async(&mut self.conn()).await?;
        Ok(envs
            .into_iter()
            .zip(found)
            .filter(|(_, members)| !members.is_empty())
            .collect())
    }

    /// Once per store: puts the runs written before the statistics' sets existed into them
    /// (idempotent; several processes may do it at once, and a run rewritten meanwhile is
    /// left to its writer).
    async fn index_stats_once(&self) -> anyhow::Result<()> {
        let done: bool = self.conn().exists(STATS_INDEXED).await?;
        if done {
            return Ok(());
        }
        let runs = self.scan_keys("faseng:run:*").await?;
        for chunk in runs.chunks(SWEEP_BATCH) {
            let records: Vec<Option<String>> = redis::cmd("MGET")
                .arg(chunk)
                .query_async(&mut self.conn())
                .await?;
            let mut index = index_if_same().prepare_invoke();
            let mut any = false;
            for text in records.iter().flatten() {
                if let Ok(run) = from_json::<RunRecord>(text)
                    && counted_run(&run)
                {
                    index.arg(&run.key).arg(text).arg(&stats_args(&run)[..]);
                    any = true;
                }
            }
            if any {
                let _: i64 = index.invoke_async(&mut self.conn()).await?;
            }
        }
        let _: () = self.conn().set(STATS_INDEXED, 1).await?;
        Ok(())
    }

    /// Puts runs just created into the statistics' sets when they count (an intake's runs are
    /// queued and never do), unless they were rewritten meanwhile.
    pub(super) async fn index_created(&self, runs: &[(&RunRecord, String)]) -> anyhow::Result<()> {
        let mut index = index_if_same().prepare_invoke();
        let mut any = false;
        for (run, text) in runs.iter().filter(|(run, _)| counted_run(run)) {
            index.arg(&run.key).arg(text).arg(&stats_args(run)[..]);
            any = true;
        }
        if any {
            let _: i64 = index.invoke_async(&mut self.conn()).await?;
        }
        Ok(())
    }
}

/// The members of one environment, read and in order (by received ms, then key).
fn parsed(members: &[(String, f64)]) -> anyhow::Result<Vec<Member<'_>>> {
    let mut runs = members
        .iter()
        .map(|(text, score)| Member::parse(text, *score))
        .collect::<anyhow::Result<Vec<_>>>()?;
    runs.sort_by(|a, b| (a.at_ms, a.key).cmp(&(b.at_ms, b.key)));
    Ok(runs)
}

#[async_trait]
impl Stats for RedisStore {
    async fn env_stats(&self, q: &StatsQuery) -> anyhow::Result<Vec<EnvStats>> {
        self.stats_members(q)
            .await?
            .into_iter()
            .map(|(env, members)| Ok(env_figures(env, &parsed(&members)?)))
            .collect()
    }

    async fn daily_stats(&self, q: &StatsQuery) -> anyhow::Result<Vec<(String, Vec<DayPoint>)>> {
        self.stats_members(q)
            .await?
            .into_iter()
            .map(|(env, members)| {
                let points = day_points(&parsed(&members)?)?;
                Ok((env, crate::stats::every_day(q, points)))
            })
            .collect()
    }
}
