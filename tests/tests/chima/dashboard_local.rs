//! Issue #17's first "done when", in local mode: `chima shell` prints the dashboard's loopback
//! URL; after two deploys and a rollback the overview, history, deployment and statistics
//! pages show them, and `stats` in chat says what the statistics page says. (The app is one of
//! its own, `shop`: the shipped `demo` takes its script from `deploy-config/demo`.)

use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use e2e::git_repo::GitRepo;
use e2e::wait::on_change;
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::process::{Child, ChildStdin};

/// How long one step of the conversation may take (a deploy runs a real script).
const STEP: Duration = Duration::from_secs(120);

/// A `chima shell` that stays up while the test talks to it and to its dashboard.
struct LiveShell {
    child: Child,
    stdin: Option<ChildStdin>,
    /// Everything it printed so far, stdout and stderr interleaved by line.
    printed: Arc<Mutex<String>>,
    /// Bumped on every line printed.
    changes: tokio::sync::watch::Sender<u64>,
}

impl LiveShell {
    /// Starts `chima shell` in local mode as `user`, with its state under `state`.
    fn start(state: &Path, apps: &Path, user: &str) -> Self {
        let faseng = state.join(".faseng");
        let mut child = tokio::process::Command::new(e2e::bins::binary("chima"))
            .arg("shell")
            .current_dir(e2e::bins::workspace_root())
            .env_remove("GITHUB_TOKEN")
            .env_remove("GITHUB_APP_ID")
            .env_remove("GITHUB_APP_PRIVATE_KEY")
            .env_remove("DEPLOY_CONFIG_DIR")
            .env("USER", user)
            .env("CHIMA_APPS_JSON", apps)
            .env("FASENG_WORKDIR", faseng.join("work"))
            .env("CHIMA_LOCAL_DB", faseng.join("local.db"))
            .env(
                "FASENG_QUEUE_URL",
                format!("sqlite://{}", faseng.join("faseng.db").display()),
            )
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("chima shell starts");
        let printed = Arc::new(Mutex::new(String::new()));
        let (changes, _) = tokio::sync::watch::channel(0u64);
        let stdout = child.stdout.take().unwrap();
        let stderr = child.stderr.take().unwrap();
        Self::collect(stdout, printed.clone(), changes.clone());
        Self::collect(stderr, printed.clone(), changes.clone());
        Self {
            stdin: child.stdin.take(),
            child,
            printed,
            changes,
        }
    }

    /// Copies each line of `stream` into `printed`, telling `changes`.
    fn collect(
        stream: impl tokio::io::AsyncRead + Unpin + Send + 'static,
        printed: Arc<Mutex<String>>,
        changes: tokio::sync::watch::Sender<u64>,
    ) {
        tokio::spawn(async move {
            let mut lines = BufReader::new(stream).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                let mut all = printed.lock().unwrap();
                all.push_str(&line);
                all.push('\n');
                drop(all);
                changes.send_modify(|n| *n += 1);
            }
        });
    }

    /// Types `line`.
    async fn say(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("the shell's input is open");
        stdin
            .write_all(format!("{line}\n").as_bytes())
            .await
            .unwrap();
        stdin.flush().await.unwrap();
    }

    /// Waits until the shell has printed `needle` (after `from`), and returns what it printed.
    async fn wait_for(&self, needle: &str, from: usize) -> String {
        let printed = self.printed.clone();
        on_change(&self.changes, STEP, needle, || {
            let all = printed.lock().unwrap();
            all[from.min(all.len())..]
                .contains(needle)
                .then(|| all.clone())
        })
        .await
    }

    /// How much it has printed so far (a mark for [`Self::wait_for`]).
    fn mark(&self) -> usize {
        self.printed.lock().unwrap().len()
    }

    /// Closes its input and waits for it to end.
    async fn finish(mut self) -> Option<i32> {
        drop(self.stdin.take());
        tokio::time::timeout(STEP, self.child.wait())
            .await
            .expect("chima shell ends after its input does")
            .unwrap()
            .code()
    }
}

/// The dashboard's address from the banner.
fn dashboard_url(printed: &str) -> String {
    let (_, rest) = printed
        .split_once("the dashboard and logs at ")
        .expect("the banner names the dashboard");
    let url = rest.split_whitespace().next().unwrap();
    url.trim_end_matches('/').to_owned()
}

async fn page(url: &str) -> String {
    let response = reqwest::get(url).await.unwrap();
    assert_eq!(response.status(), 200, "{url}");
    response.text().await.unwrap()
}

/// The value the statistics page shows for `figure` (the `dd` before its change) and the
/// change in brackets.
fn page_figure(html: &str, figure: &str) -> (String, String) {
    let at = html
        .find(&format!("data-figure=\"{figure}\""))
        .unwrap_or_else(|| panic!("the page shows {figure}: {html}"));
    let rest = &html[at..];
    let dd = &rest[rest.find("<dd>").unwrap() + 4..];
    let value = &dd[..dd.find('<').unwrap()];
    let change = &dd[dd.find("(").unwrap() + 1..];
    let change = &change[..change.find(')').unwrap()];
    (value.to_owned(), change.to_owned())
}

#[tokio::test]
async fn the_dashboard_shows_two_deploys_and_a_rollback_in_local_mode() {
    let state = tempfile::tempdir().unwrap();
    let repo = GitRepo::new();
    repo.write_executable(
        "deploy.sh",
        "#!/bin/sh\nprintf '\\033[32mdeployed\\033[0m %s to %s\\n' \"$DEPLOY_SHA\" \"$DEPLOY_ENV\"\n",
    );
    let first = repo.commit("first");
    repo.branch("feature");
    repo.write("feature.txt", "new\n");
    let second = repo.commit("feature");
    repo.branch("main");
    repo.git(&["reset", "--quiet", "--hard", &first]);
    let apps = state.path().join("app.json");
    std::fs::write(
        &apps,
        serde_json::json!({"shop": {
            "provider": "shell", "repository": "oursky/chima", "environments": ["staging"],
            "default_environment": "staging", "clone_url": repo.path().display().to_string(),
            "deploy_script": "deploy.sh", "timeout": 120}})
        .to_string(),
    )
    .unwrap();

    let mut shell = LiveShell::start(state.path(), &apps, "alice");
    let banner = shell.wait_for("the dashboard and logs at ", 0).await;
    let base = dashboard_url(&banner);
    assert!(base.starts_with("http://127.0.0.1:"), "{base}");

    shell.say("chima deploy shop to staging").await;
    shell.wait_for("#1 shop: success in ", 0).await;
    shell.say("chima deploy shop/feature to staging").await;
    shell.wait_for("#2 shop: success in ", 0).await;
    shell.say("chima rollback shop in staging").await;
    shell.wait_for("#3 shop: success in ", 0).await;

    // The overview: staging runs the first commit again, by a rollback, and is locked.
    let overview = page(&format!("{base}/")).await;
    assert!(overview.contains("shop") && overview.contains("staging"));
    assert!(overview.contains(&first[..7]), "{overview}");
    assert!(
        overview.contains("rolled back from"),
        "the rollback's lock is shown: {overview}"
    );
    // The app's history lists all three, newest first.
    let history = page(&format!("{base}/apps/shop")).await;
    let rows: Vec<usize> = [
        "/runs/oursky/chima/3",
        "/runs/oursky/chima/2",
        "/runs/oursky/chima/1",
    ]
    .iter()
    .map(|link| {
        history
            .find(link)
            .unwrap_or_else(|| panic!("{link}: {history}"))
    })
    .collect();
    assert!(rows.windows(2).all(|w| w[0] < w[1]), "newest first");
    // The rollback's own page: marked, its stages done, its log coloured.
    let run = page(&format!("{base}/runs/oursky/chima/3")).await;
    assert!(run.to_lowercase().contains("rollback"), "{run}");
    assert!(run.contains(&second[..7]), "names what it rolled back from");
    assert!(run.contains("data-state=\"done\""), "{run}");
    assert!(!run.contains("data-state=\"failed\""), "{run}");
    assert!(run.contains(&format!("deployed</span> {first}")), "{run}");
    assert!(!run.contains('\u{1b}'), "no raw escape codes");

    // Statistics: the page and chat say the same figures.
    let stats_page = page(&format!("{base}/apps/shop/stats?env=staging&for=30d")).await;
    assert!(stats_page.contains("<svg"), "charts are drawn");
    let mark = shell.mark();
    shell.say("chima stats shop in staging").await;
    let printed = shell.wait_for("time to restore", mark).await;
    let said = &printed[mark..];
    let (deploys, deploys_change) = page_figure(&stats_page, "deploys");
    assert_eq!(deploys, "3");
    assert!(
        said.contains(&format!("3 deploys ({deploys_change})")),
        "{said}"
    );
    for (figure, words) in [
        ("success rate", "success rate"),
        ("median", "median"),
        ("p90", "p90"),
        ("change failure rate", "change-failure rate"),
        ("time to restore", "time to restore"),
    ] {
        let (value, change) = page_figure(&stats_page, figure);
        assert!(
            said.contains(&format!("{words} {value} ({change})")),
            "chat says {figure} as the page does ({value}, {change}): {said}"
        );
    }
    let (per_day, per_day_change) = page_figure(&stats_page, "per day");
    assert!(
        said.contains(&format!("{per_day} per day ({per_day_change})")),
        "{said}"
    );
    // The second deploy was rolled back: one change failure in three.
    assert_eq!(page_figure(&stats_page, "change failure rate").0, "33%");

    assert_eq!(shell.finish().await, Some(0));
}
