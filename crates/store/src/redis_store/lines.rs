//! Waiting lines and recent durations on Redis.

use super::*;

#[async_trait]
impl Lines for RedisStore {
    async fn line_heads(&self) -> anyhow::Result<Vec<(String, String)>> {
        let lines: Vec<String> = self.conn().smembers("faseng:lines").await?;
        if lines.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for line in &lines {
            pipe.lindex(k("line", line), 0);
        }
        let heads: Vec<Option<String>> = pipe.query_async(&mut self.conn()).await?;
        Ok(lines
            .into_iter()
            .zip(heads)
            .filter_map(|(line, head)| head.map(|h| (line, h)))
            .collect())
    }

    async fn line_join(&self, line: &str, key: &str) -> anyhow::Result<()> {
        let _: i64 = scripts()
            .join
            .key(k("line", line))
            .key(k("line_members", line))
            .arg(key)
            .arg(line)
            .invoke_async(&mut self.conn())
            .await?;
        Ok(())
    }

    async fn line_leave(&self, line: &str, key: &str) -> anyhow::Result<()> {
        let _: i64 = scripts()
            .leave
            .key(k("line", line))
            .key(k("line_members", line))
            .arg(key)
            .arg(line)
            .invoke_async(&mut self.conn())
            .await?;
        Ok(())
    }

    async fn line(&self, line: &str) -> anyhow::Result<Vec<String>> {
        Ok(self.conn().lrange(k("line", line), 0, -1).await?)
    }

    async fn push_duration(&self, line: &str, secs: f64) -> anyhow::Result<()> {
        let key = k("durations", line);
        let _: () = redis::pipe()
            .atomic()
            .lpush(&key, secs)
            .ignore()
            .ltrim(&key, 0, DURATIONS_KEPT as isize - 1)
            .ignore()
            .query_async(&mut self.conn())
            .await?;
        Ok(())
    }

    async fn durations(&self, line: &str) -> anyhow::Result<Vec<f64>> {
        Ok(self
            .conn()
            .lrange(k("durations", line), 0, DURATIONS_KEPT as isize - 1)
            .await?)
    }
}
