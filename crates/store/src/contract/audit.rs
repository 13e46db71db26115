//! The audit: append-only, newest first, filtered by app and environment, paged.

use chrono::{DateTime, Utc};

use crate::{AuditAction, AuditEntry, AuditQuery, Store};

/// Appending and listing the audit.
pub async fn audit(store: &dyn Store) {
    let t0: DateTime<Utc> = "2026-12-06T10:00:00Z".parse().unwrap();
    let entry = |mins: i64, action: AuditAction, app: &str, env: Option<&str>| AuditEntry {
        at: t0 + chrono::Duration::minutes(mins),
        actor: "U0ALICE".into(),
        actor_name: "alice".into(),
        action,
        app: app.into(),
        environment: env.map(Into::into),
        git_ref: Some("main".into()),
        sha: None,
        room: Some("C0RELEASE".into()),
        adapter: Some("slack".into()),
        detail: format!("{} at {mins}", action.as_str()),
    };
    let entries = [
        entry(0, AuditAction::Lock, "demo", Some("staging")),
        entry(1, AuditAction::LineJoin, "demo", Some("staging")),
        entry(2, AuditAction::Freeze, "web", None),
        entry(3, AuditAction::Unlock, "demo", Some("staging")),
        entry(4, AuditAction::HandOff, "demo", Some("staging")),
        entry(5, AuditAction::Deploy, "demo", Some("production")),
    ];
    let mut ids = Vec::new();
    for e in &entries {
        ids.push(store.audit_append(e).await.unwrap());
    }
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "ids grow: {ids:?}");
    let actions = |page: &crate::Page<crate::AuditRecord>| {
        page.items
            .iter()
            .map(|r| r.entry.action)
            .collect::<Vec<_>>()
    };
    use AuditAction::*;
    let all = store.audit(&AuditQuery::default()).await.unwrap();
    assert_eq!(
        actions(&all),
        [Deploy, HandOff, Unlock, Freeze, LineJoin, Lock],
        "newest first"
    );
    assert_eq!(
        all.items.last().unwrap().entry,
        entries[0],
        "kept as written"
    );
    assert_eq!(all.next, None);
    let demo_staging = AuditQuery {
        app: Some("demo".into()),
        environment: Some("staging".into()),
        ..AuditQuery::default()
    };
    assert_eq!(
        actions(&store.audit(&demo_staging).await.unwrap()),
        [HandOff, Unlock, LineJoin, Lock]
    );
    let since = AuditQuery {
        app: Some("demo".into()),
        since: Some(t0 + chrono::Duration::minutes(3)),
        ..AuditQuery::default()
    };
    assert_eq!(
        actions(&store.audit(&since).await.unwrap()),
        [Deploy, HandOff, Unlock]
    );
    let mut paged = AuditQuery {
        limit: 4,
        ..AuditQuery::default()
    };
    let first = store.audit(&paged).await.unwrap();
    assert_eq!(actions(&first), [Deploy, HandOff, Unlock, Freeze]);
    paged.cursor = first.next;
    let second = store.audit(&paged).await.unwrap();
    assert_eq!(actions(&second), [LineJoin, Lock]);
    assert_eq!(second.next, None);
    assert!(
        store
            .audit(&AuditQuery {
                app: Some("nope".into()),
                ..AuditQuery::default()
            })
            .await
            .unwrap()
            .items
            .is_empty()
    );
    // The desk's own actions are kept by name.
    for action in [Extend, LineExpired] {
        store
            .audit_append(&entry(6, action, "desk", Some("staging")))
            .await
            .unwrap();
    }
    let desk = store
        .audit(&AuditQuery {
            app: Some("desk".into()),
            ..AuditQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(actions(&desk), [LineExpired, Extend]);
    assert_eq!(desk.items[0].entry.detail, "line_expired at 6");
}
