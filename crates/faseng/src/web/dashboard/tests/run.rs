//! The deployment page, its stream, and the statistics page.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use chrono::Duration;
use futures::StreamExt as _;

use super::{Backend, Fixture, now, on_both_backends, run};
use crate::store::{RollbackMark, RunState, StageRecord, StageRecordState};

on_both_backends!(
    a_deployment_shows_its_stages_log_links_and_rollback_badge,
    the_stream_sends_new_lines_stage_changes_and_the_end,
    statistics_show_the_figures_and_charts_per_environment,
);

fn stage(name: &str, state: StageRecordState, from: i64, to: Option<i64>) -> StageRecord {
    StageRecord {
        name: name.into(),
        state,
        started_at: Some(now() - Duration::seconds(from)),
        finished_at: to.map(|s| now() - Duration::seconds(s)),
    }
}

async fn a_deployment_shows_its_stages_log_links_and_rollback_badge(b: Backend) {
    let Some(f) = Fixture::new(b).await else {
        return;
    };
    f.add_run(&run(1, "staging", RunState::Success, 'a', 300), &[])
        .await;
    f.add_run(&run(2, "staging", RunState::Success, 'b', 200), &[])
        .await;
    let mut current = run(3, "staging", RunState::InProgress, 'c', 1);
    current.rollback = Some(RollbackMark {
        from: "b".repeat(40),
        to: "c".repeat(40),
    });
    current.stages = vec![
        stage("prepare", StageRecordState::Done, 50, Some(48)),
        stage("deploy", StageRecordState::Running, 48, None),
        StageRecord {
            name: "after".into(),
            state: StageRecordState::Pending,
            started_at: None,
            finished_at: None,
        },
    ];
    f.add_run(
        &current,
        &[
            "\x1b[32mok\x1b[0m step <1>",
            "\x1b[1;31merror\x1b[0m: \"quoted\"",
        ],
    )
    .await;

    let (code, page) = f.get("/runs/o/r/3").await;
    assert_eq!(code, StatusCode::OK, "{page}");
    assert!(
        page.contains(r#"<span class="badge rollback" id="rollback""#),
        "{page}"
    );
    assert!(
        page.contains(r#"<li class="stage" data-stage="prepare" data-state="done">"#),
        "{page}"
    );
    assert!(
        page.contains(r#"data-stage="deploy" data-state="running">"#),
        "{page}"
    );
    assert!(
        page.contains(r#"data-stage="after" data-state="pending">"#),
        "{page}"
    );
    assert!(
        page.contains("<span class=\"stage-time\">2s</span>"),
        "{page}"
    );
    assert!(
        page.contains("for 48s"),
        "a running stage's time so far: {page}"
    );
    assert!(
        page.contains(r#"<span class="line"><span class="a-f2">ok</span> step &lt;1&gt;</span>"#),
        "{page}"
    );
    assert!(
        page.contains(r#"<span class="a-b a-f1">error</span>: &quot;quoted&quot;"#),
        "{page}"
    );
    assert!(
        page.contains(r#"data-from="2" data-events="/runs/o/r/3/events""#),
        "a running deployment follows its stream: {page}"
    );
    let c = "c".repeat(40);
    let b = "b".repeat(40);
    assert!(
        page.contains(&format!(r#"href="https://ghe.example.com/o/r/commit/{c}""#)),
        "{page}"
    );
    assert!(
        page.contains(&format!(
            r#"href="https://ghe.example.com/o/r/compare/{b}...{c}""#
        )),
        "compared with the previous successful deploy of another sha: {page}"
    );
    assert!(
        !page.contains("rollback-form"),
        "no rollback to a running deploy: {page}"
    );

    // An earlier good deploy offers a rollback to it; what is deployed now does not.
    let (_, earlier) = f.get("/runs/o/r/1").await;
    assert!(
        earlier.contains(r#"<form id="rollback-form" method="post" action="/actions/rollback">"#),
        "{earlier}"
    );
    assert!(
        earlier.contains(r#"name="deployment" value="1""#),
        "{earlier}"
    );
    assert!(
        earlier.contains(r#"name="csrf" value="csrf-0123456789""#),
        "{earlier}"
    );
    assert!(
        !earlier.contains("data-events"),
        "a finished deployment has no stream: {earlier}"
    );
    assert!(
        earlier.contains("The stages show once the run starts."),
        "{earlier}"
    );
    let (_, deployed) = f.get("/runs/o/r/2").await;
    assert!(!deployed.contains("rollback-form"), "{deployed}");

    for missing in [
        "/runs/o/r/4",
        "/runs/o/r/x",
        "/runs/o/..%2F/1",
        "/runs/o/r/3/extra",
    ] {
        assert_eq!(f.get(missing).await.0, StatusCode::NOT_FOUND, "{missing}");
    }
}

async fn the_stream_sends_new_lines_stage_changes_and_the_end(b: Backend) {
    let Some(f) = Fixture::new(b).await else {
        return;
    };
    let mut r = run(5, "staging", RunState::InProgress, 'a', 1);
    r.stages = vec![stage("prepare", StageRecordState::Running, 5, None)];
    f.add_run(&r, &["one", "two"]).await;
    let response = f
        .send(
            Request::get("/runs/o/r/5/events?from=1")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let mut body = response.into_body().into_data_stream();
    let mut seen = String::new();
    let mut read_until = async |want: &str, seen: &mut String| {
        while !seen.contains(want) {
            let chunk = body.next().await.expect("the stream goes on").unwrap();
            seen.push_str(std::str::from_utf8(&chunk).unwrap());
        }
    };
    read_until("event: state", &mut seen).await;
    assert!(
        seen.contains("event: line\ndata: two\n"),
        "from line 1 on: {seen}"
    );
    assert!(!seen.contains("data: one"), "{seen}");
    assert!(
        seen.contains(r#"data-stage="prepare" data-state="running""#),
        "{seen}"
    );
    assert!(seen.contains("data: in_progress"), "{seen}");

    let store = &f.state.store;
    store
        .append_log(&r.key, &["\x1b[31mred <x>\x1b[0m".to_owned()])
        .await
        .unwrap();
    read_until("red", &mut seen).await;
    assert!(
        seen.contains(r#"data: <span class="a-f1">red &lt;x&gt;</span>"#),
        "lines come as HTML: {seen}"
    );
    r.stages = vec![
        stage("prepare", StageRecordState::Done, 5, Some(2)),
        stage("deploy", StageRecordState::Failed, 2, Some(0)),
    ];
    r.state = RunState::Failure;
    store
        .append_log(&r.key, &["last words".to_owned()])
        .await
        .unwrap();
    store.put_run(&r).await.unwrap();
    read_until("event: end", &mut seen).await;
    assert!(seen.contains("data: last words"), "{seen}");
    assert!(
        seen.contains(r#"data-stage="deploy" data-state="failed""#),
        "{seen}"
    );
    assert!(seen.contains("data: failure"), "{seen}");
    assert!(body.next().await.is_none(), "the stream ends: {seen}");
}

async fn statistics_show_the_figures_and_charts_per_environment(b: Backend) {
    let Some(f) = Fixture::new(b).await else {
        return;
    };
    // Staging: four deploys over the last days (one failure); the previous period: one.
    for (id, state, minutes_ago) in [
        (1, RunState::Success, 60 * 24 * 3),
        (2, RunState::Failure, 60 * 24 * 2),
        (3, RunState::Success, 60 * 24 * 2 - 30),
        (4, RunState::Success, 60),
        (5, RunState::Success, 60 * 24 * 40),
    ] {
        f.add_run(&run(id, "staging", state, 'a', minutes_ago), &[])
            .await;
    }
    let (code, page) = f.get("/apps/demo/stats?for=30d").await;
    assert_eq!(code, StatusCode::OK, "{page}");
    let staging = page
        .split(r#"data-env="staging""#)
        .nth(1)
        .unwrap()
        .split("</section>")
        .next()
        .unwrap();
    let q = crate::store::StatsQuery {
        app: "demo".into(),
        environment: Some("staging".into()),
        since: now() - Duration::days(30),
        until: now(),
    };
    let current = f.state.store.env_stats(&q).await.unwrap();
    let previous = f.state.store.env_stats(&q.previous()).await.unwrap();
    let figures = crate::store::figures(&current[0], previous.first(), &q);
    assert_eq!(figures.deploys, "4");
    for (name, value) in [
        ("deploys", &figures.deploys),
        ("success rate", &figures.success_rate),
        ("median", &figures.median),
        ("per day", &figures.per_day),
    ] {
        let change = &figures.change.iter().find(|(n, _)| n == name).unwrap().1;
        assert!(
            staging.contains(&format!(r#"<div data-figure="{name}"><dt>"#))
                && staging.contains(&format!(
                    "<dd>{value}<span class=\"change\">({change})</span></dd>"
                )),
            "{name}: the figure chat prints, with its change: {staging}"
        );
    }
    assert!(
        staging.contains(r#"data-chart="deploys-staging" data-points="31""#),
        "{staging}"
    );
    assert!(
        staging.contains(r#"data-chart="success-staging""#),
        "{staging}"
    );
    assert!(
        staging.contains(r#"data-chart="duration-staging""#),
        "{staging}"
    );
    assert_eq!(
        staging.matches("<rect class=\"bar\"").count(),
        31,
        "a bar per day touched"
    );
    let production = page.split(r#"data-env="production""#).nth(1).unwrap();
    assert!(
        production.contains("No deploys in this period."),
        "{production}"
    );
    assert!(production.contains(r#"data-chart="deploys-production" data-points="31""#));

    let (_, week) = f.get("/apps/demo/stats?env=staging&for=7d").await;
    assert!(!week.contains(r#"data-env="production""#), "{week}");
    assert!(week.contains(r#"<option value="7d" selected>"#), "{week}");
    for bad in ["/apps/demo/stats?for=2y", "/apps/demo/stats?env=moon"] {
        assert_eq!(f.get(bad).await.0, StatusCode::BAD_REQUEST, "{bad}");
    }
    assert_eq!(f.get("/apps/nope/stats").await.0, StatusCode::NOT_FOUND);
}
