//! `chima audit`: the audit for people (one line per action) and for tools (JSON lines),
//! newest first, paged through the store so any length of history streams out.

use std::io::Write;

use chrono::{DateTime, Utc};
use deploy_store::{AuditQuery, AuditRecord, Store};

use crate::cli::AuditArgs;

/// Writes the entries `args` asks for to `out`, newest first; how many.
pub async fn write(
    store: &dyn Store,
    args: &AuditArgs,
    now: DateTime<Utc>,
    out: &mut dyn Write,
) -> anyhow::Result<usize> {
    let mut query = AuditQuery {
        app: args.app.clone(),
        environment: args.env.clone(),
        since: args.since.map(|s| now - s.as_chrono()),
        limit: 0,
        cursor: None,
    };
    let mut written = 0;
    loop {
        let page = store.audit(&query).await?;
        for record in &page.items {
            if args.limit > 0 && written == args.limit {
                return Ok(written);
            }
            writeln!(out, "{}", line(record, args.json)?)?;
            written += 1;
        }
        match page.next {
            Some(next) => query.cursor = Some(next),
            None => return Ok(written),
        }
    }
}

fn line(record: &AuditRecord, json: bool) -> anyhow::Result<String> {
    let e = &record.entry;
    if json {
        return Ok(serde_json::to_string(e)?);
    }
    let mut text = format!(
        "{} {} {} {}",
        e.at.format("%Y-%m-%dT%H:%M:%SZ"),
        if e.actor_name.is_empty() {
            &e.actor
        } else {
            &e.actor_name
        },
        e.action.as_str(),
        e.app
    );
    if let Some(env) = &e.environment {
        text.push_str(&format!(" in {env}"));
    }
    if let Some(r) = &e.git_ref {
        text.push_str(&format!(" {r}"));
        if let Some(sha) = &e.sha {
            text.push_str(&format!("@{}", sha.get(..7).unwrap_or(sha)));
        }
    }
    if !e.detail.is_empty() {
        text.push_str(&format!(": {}", e.detail));
    }
    if let Some(room) = &e.room {
        text.push_str(&format!(" (from {room})"));
    }
    Ok(deploy_core::chat::plain::quote(&text))
}

#[cfg(test)]
mod tests {
    use super::*;
    use deploy_store::{AuditAction, AuditEntry, StoreUrl};

    #[tokio::test]
    async fn the_audit_comes_out_newest_first_as_lines_or_json() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("faseng.db").display());
        let store = StoreUrl::parse(&url).unwrap().open().await.unwrap();
        let at: DateTime<Utc> = "2026-12-06T10:00:00Z".parse().unwrap();
        for (i, (action, env)) in [
            (AuditAction::Lock, "staging"),
            (AuditAction::LineJoin, "staging"),
            (AuditAction::Unlock, "production"),
        ]
        .into_iter()
        .enumerate()
        {
            store
                .audit_append(&AuditEntry {
                    at: at + chrono::Duration::minutes(i as i64),
                    actor: "U0ALICE".into(),
                    actor_name: "alice".into(),
                    action,
                    app: "demo".into(),
                    environment: Some(env.into()),
                    git_ref: None,
                    sha: None,
                    room: Some("#shell".into()),
                    adapter: Some("shell".into()),
                    detail: "why\nnot".into(),
                })
                .await
                .unwrap();
        }
        let args = |json, env: Option<&str>| AuditArgs {
            app: Some("demo".into()),
            env: env.map(str::to_owned),
            since: None,
            limit: 0,
            json,
        };
        let mut out = Vec::new();
        let n = write(store.as_ref(), &args(false, Some("staging")), at, &mut out)
            .await
            .unwrap();
        assert_eq!(n, 2);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "2026-12-06T10:01:00Z alice line_join demo in staging: why not (from #shell)\n2026-12-06T10:00:00Z alice lock demo in staging: why not (from #shell)\n"
        );
        let mut out = Vec::new();
        write(store.as_ref(), &args(true, None), at, &mut out)
            .await
            .unwrap();
        let lines: Vec<serde_json::Value> = String::from_utf8(out)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[0]["action"], "unlock");
        assert_eq!(lines[0]["actor"], "U0ALICE");
        assert_eq!(lines[2]["detail"], "why\nnot");
        let mut out = Vec::new();
        let since = AuditArgs {
            since: Some("90s".parse().unwrap()),
            ..args(true, None)
        };
        let n = write(
            store.as_ref(),
            &since,
            at + chrono::Duration::minutes(2),
            &mut out,
        )
        .await
        .unwrap();
        assert_eq!(n, 2, "the last 90 seconds");
    }
}
