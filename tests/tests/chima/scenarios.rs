//! The whole loop as one piece, with real processes: Slack event → `chima serve` → GitHub
//! deployment (fake GitHub) → signed webhook → `faseng serve` → queue (real Redis or a real
//! SQLite file) → shell provider on a real git checkout → statuses on GitHub → the same Slack
//! message edited in place. Each scenario runs on both queue backends. The QA scenario
//! deploys with capistrano over a real sshd on 127.0.0.1.

use std::path::PathBuf;
use std::time::Duration;

use e2e::backend::Backend;
use e2e::fake_github::{Check, FakeGithub};
use e2e::fake_slack::{BOT_USER, Message, now_secs};
use e2e::git_repo::GitRepo;
use e2e::procs::Proc;
use e2e::slack_app::post_signed;
use e2e::sshd::Sshd;
use e2e::world::{REPO, SECRET};
use serde_json::json;

const SIGNING_SECRET: &str = "scenario-signing-secret";
const WAIT: Duration = Duration::from_secs(60);
const RANDOM: &str = "C0RANDOM01";
const QA: &str = "C0QA000001";
const JOYZ: &str = "U2147483697";
const ALICE: &str = "U0ALICE001";
const BOB: &str = "U0BOB00001";

/// A [`e2e::world::World`] whose trelhub has a `feature` branch too, with chima and faseng
/// as real processes.
struct World {
    world: e2e::world::World,
    capistrano: Option<Capistrano>,
    _chima: Proc,
    chima_url: String,
    faseng: Option<Proc>,
    faseng_port: u16,
    http: reqwest::Client,
    next_ts: u64,
}

e2e::wraps_world!(World);

/// modmod-web deployed by capistrano: the test sshd it deploys to, its repository and the
/// server-side deploy directory.
struct Capistrano {
    sshd: Sshd,
    _repo: GitRepo,
    deploy_to: PathBuf,
}

impl Capistrano {
    /// A modmod-web repository (with a `feature` branch that must not go out), its bare clone
    /// for capistrano's `repo_url`, and `deploy-config/modmod-web` aimed at `sshd`.
    fn set_up(sshd: Sshd, dir: &std::path::Path, gh: &FakeGithub) -> Self {
        let repo = GitRepo::new();
        repo.write("VERSION", "edge build\n");
        let main = repo.commit("release candidate");
        repo.branch("feature");
        repo.write("VERSION", "unfinished\n");
        let feature = repo.commit("work in progress");
        repo.branch("main");
        repo.git(&["reset", "--quiet", "--hard", &main]);
        let repo_url = e2e::deploy_config::bare_clone(repo.path(), &dir.join("modmod-web.git"));
        let deploy_to = dir.join("srv/modmod-web");
        e2e::deploy_config::modmod_web_on(
            &dir.join("deploy-config/modmod-web"),
            &sshd,
            &repo_url,
            &deploy_to,
            3,
        );
        gh.add_repo("oursky/modmod-web", "main");
        gh.set_branch("oursky/modmod-web", "main", &main);
        gh.set_branch("oursky/modmod-web", "feature", &feature);
        gh.set_clone_url("oursky/modmod-web", &repo.url());
        Self {
            sshd,
            _repo: repo,
            deploy_to,
        }
    }
}

impl World {
    /// Starts the fakes, a repository whose `script/deploy` records each run, chima and faseng.
    async fn start(backend: Backend) -> Option<Self> {
        Self::start_with(backend, None).await
    }

    /// [`World::start`], plus modmod-web deploying with capistrano to a real sshd (`None`,
    /// with the reason printed, when sshd is not installed).
    async fn with_capistrano(backend: Backend) -> Option<Self> {
        let sshd = Sshd::start()?;
        Self::start_with(backend, Some(sshd)).await
    }

    async fn start_with(backend: Backend, sshd: Option<Sshd>) -> Option<Self> {
        // The deploy script runs as the provider user when the tests run as root.
        let world = e2e::world::World::build(backend)
            .script(
                "set -e\necho \"start $DEPLOY_ID\" >> $SCRATCH/runs.log\necho \"deploying $DEPLOY_REF ($DEPLOY_SHA) to $DEPLOY_ENV for $DEPLOY_USER\"\nsleep 0.3\necho \"end $DEPLOY_ID\" >> $SCRATCH/runs.log\n",
            )
            .start()
            .await?;
        let (repo, gh) = (&world.repo, &world.gh);
        let main = world.sha.clone();
        repo.branch("feature");
        repo.write("feature.txt", "new\n");
        let feature = repo.commit("feature");
        repo.branch("main");
        repo.git(&["reset", "--quiet", "--hard", &main]);
        gh.add_repo("oursky/project-x", "main");
        gh.set_branch(REPO, "feature", &feature);
        let capistrano = sshd.map(|sshd| Capistrano::set_up(sshd, world.dir.path(), gh));

        let mut apps = json!({
            "trelhub": {"provider": "shell", "repository": REPO,
                        "environments": ["pandawork", "edge"], "clone_url": repo.url()},
            "project-x": {"provider": "shell", "repository": "oursky/project-x",
                          "environments": ["live", "edge"], "allowed_rooms": ["deployment"],
                          "auto_merge": false, "required_contexts": ["ci/travis"]}
        });
        if capistrano.is_some() {
            apps["modmod-web"] = json!({"provider": "capistrano", "repository": "oursky/modmod-web",
                "environments": ["edge", "staging"], "default_environment": "edge",
                "allowed_rooms": ["qa"]});
        }
        let apps_json = world.write_apps(&apps);
        let faseng_port = e2e::net::free_port("127.0.0.1");
        gh.set_webhook(
            &format!("http://127.0.0.1:{faseng_port}/webhooks/github"),
            SECRET,
        );
        let (chima, chima_url) = world.chima_serve(&apps_json, SIGNING_SECRET).await;
        let mut world = Self {
            world,
            capistrano,
            _chima: chima,
            chima_url,
            faseng: None,
            faseng_port,
            http: reqwest::Client::new(),
            next_ts: 100,
        };
        world.start_faseng(true).await;
        Some(world)
    }

    fn faseng_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.faseng_port)
    }

    async fn start_faseng(&mut self, with_worker: bool) {
        let mut env = self.faseng_env(&self.dir.path().join("app.json"));
        env.bind(self.faseng_port);
        if let Some(cap) = &self.capistrano {
            env.set("DEPLOY_SSH_KEY", cap.sshd.client_key_text())
                .set("DEPLOY_SSH_KNOWN_HOSTS", cap.sshd.known_hosts_line());
        }
        let mut cmd = env.command(e2e::bins::binary("faseng"));
        cmd.arg("serve");
        if !with_worker {
            cmd.arg("--no-worker");
        }
        let mut faseng = Proc::spawn_logged(cmd, &self.dir.path().join("faseng.log"));
        faseng.wait_healthy(&self.faseng_url()).await;
        self.faseng = Some(faseng);
    }

    async fn kill_faseng(&mut self) {
        if let Some(mut faseng) = self.faseng.take() {
            faseng.kill().await;
        }
    }

    /// `<@chima> {command}` said by `user` in `channel`; returns the message ts.
    async fn say(&mut self, channel: &str, user: &str, command: &str) -> String {
        self.next_ts += 1;
        let ts = format!("1700000100.{:06}", self.next_ts);
        let body = json!({"type": "event_callback", "team_id": "T1", "api_app_id": "A1",
            "event_id": format!("Ev{ts}"), "event_time": now_secs(),
            "event": {"type": "app_mention", "user": user, "channel": channel, "channel_type": "channel",
                      "text": format!("<@{BOT_USER}> {command}"), "ts": ts}})
        .to_string();
        let url = format!("{}/slack/events", self.chima_url);
        let status = post_signed(
            &self.http,
            &url,
            SIGNING_SECRET,
            "application/json",
            body,
            now_secs(),
            &[],
        )
        .await;
        assert_eq!(status, 200);
        ts
    }

    /// chima's reply in the thread of `ts` once it contains `needle`.
    async fn reply(&self, channel: &str, ts: &str, needle: &str) -> Message {
        self.slack.wait_for_reply(channel, ts, needle, WAIT).await
    }

    fn deployment_id(&self, message: &Message) -> u64 {
        let text = &message.text;
        let start = text.find("Deployment #").expect("a deployment message") + "Deployment #".len();
        text[start..].split(' ').next().unwrap().parse().unwrap()
    }

    /// Waits until faseng acknowledged (202) the webhook of deployment `id`.
    async fn acknowledged(&self, id: u64) {
        let delivery = format!("delivery-{id}");
        self.gh
            .wait_until(WAIT, &format!("{delivery} acknowledged"), |gh| {
                gh.deliveries()
                    .iter()
                    .any(|d| d.id == delivery && d.status == 202)
                    .then_some(())
            })
            .await;
    }

    /// The body of a GET of `url` (a log page, its plain text).
    async fn text(&self, url: impl reqwest::IntoUrl) -> String {
        let response = self.http.get(url).send().await.unwrap();
        assert!(response.status().is_success(), "{}", response.status());
        response.text().await.unwrap()
    }

    fn runs(&self) -> Vec<String> {
        std::fs::read_to_string(self.scratch("runs.log"))
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }
}

async fn developer_deploys_a_branch(backend: Backend) {
    let Some(mut w) = World::start(backend).await else {
        return;
    };
    let ts = w
        .say(RANDOM, JOYZ, "deploy trelhub/feature to pandawork")
        .await;
    let live = w.reply(RANDOM, &ts, "Deployment #").await;
    let id = w.deployment_id(&live);
    let done = w
        .slack
        .wait_for_text(RANDOM, &live.ts, "is done in", WAIT)
        .await;
    assert!(done.text.contains("trelhub/feature"), "{}", done.text);
    w.gh.wait_for_status(id, "success", WAIT).await;
    assert_eq!(w.states(id), ["queued", "in_progress", "success"]);
    let in_progress = &w.gh.statuses(id)[1];
    let log_url = in_progress["log_url"].as_str().unwrap().to_owned();
    assert!(log_url.starts_with(&w.faseng_url()), "{log_url}");
    let page = w.text(&log_url).await;
    assert!(
        page.contains("deploying feature"),
        "the log page serves the output: {page}"
    );
    let text = w.text(format!("{log_url}/log")).await;
    assert!(
        text.contains("deploying feature"),
        "and as plain text: {text}"
    );
    assert_eq!(
        w.slack.replies_in_thread(RANDOM, &ts).len(),
        1,
        "one live message, edited in place"
    );
    let feature_sha = w.gh.branch_sha("oursky/trelhub", "feature");
    assert!(w.gh.deployments("oursky/trelhub")[0]["sha"] == feature_sha.as_str());
    assert_eq!(w.runs(), [format!("start {id}"), format!("end {id}")]);
}

async fn three_users_wait_in_line(backend: Backend) {
    let Some(mut w) = World::start(backend).await else {
        return;
    };
    let mut lives = Vec::new();
    for user in [JOYZ, ALICE, BOB] {
        let ts = w.say(RANDOM, user, "deploy trelhub to edge").await;
        let live = w.reply(RANDOM, &ts, "Deployment #").await;
        // Arrival order is the order GitHub delivered the webhooks.
        let id = w.deployment_id(&live);
        w.acknowledged(id).await;
        lives.push((id, live));
    }
    for (id, live) in &lives {
        w.gh.wait_for_status(*id, "success", WAIT).await;
        w.slack
            .wait_for_text(RANDOM, &live.ts, "is done in", WAIT)
            .await;
    }
    let ids: Vec<u64> = lives.iter().map(|(id, _)| *id).collect();
    let expected: Vec<String> = ids
        .iter()
        .flat_map(|id| [format!("start {id}"), format!("end {id}")])
        .collect();
    assert_eq!(w.runs(), expected, "one at a time, in arrival order");
    for (id, live) in &lives[1..] {
        let message = w.slack.message(RANDOM, &live.ts).unwrap();
        assert!(
            message
                .history
                .iter()
                .any(|t| t.contains("Waiting behind #")),
            "#{id}'s message showed its place in line: {:#?}",
            message.history
        );
        let queued = &w.gh.statuses(*id)[0];
        assert!(
            queued["description"]
                .as_str()
                .unwrap()
                .starts_with("Waiting behind #"),
            "{queued}"
        );
    }
}

async fn a_queued_deployment_survives_a_faseng_restart(backend: Backend) {
    let Some(mut w) = World::start(backend).await else {
        return;
    };
    w.kill_faseng().await;
    w.start_faseng(false).await;
    let ts = w.say(RANDOM, JOYZ, "deploy trelhub to pandawork").await;
    let live = w.reply(RANDOM, &ts, "Deployment #").await;
    let id = w.deployment_id(&live);
    w.acknowledged(id).await;
    assert!(w.runs().is_empty(), "no worker yet");
    w.kill_faseng().await;
    w.start_faseng(true).await;
    w.gh.wait_for_status(id, "success", WAIT).await;
    w.slack
        .wait_for_text(RANDOM, &live.ts, "is done in", WAIT)
        .await;
    assert_eq!(
        w.runs(),
        [format!("start {id}"), format!("end {id}")],
        "run once"
    );
    let states = w.states(id);
    assert_eq!(
        states.iter().filter(|s| *s == "in_progress").count(),
        1,
        "{states:?}"
    );
    assert_eq!(
        states.iter().filter(|s| *s == "success").count(),
        1,
        "{states:?}"
    );
    assert_eq!(
        states.first().map(String::as_str),
        Some("queued"),
        "{states:?}"
    );
}

async fn qa_deploys_the_default_branch_to_edge_with_capistrano(backend: Backend) {
    let Some(mut w) = World::with_capistrano(backend).await else {
        return;
    };
    let ts = w.say(RANDOM, ALICE, "deploy modmod-web to edge").await;
    let refusal = w.reply(RANDOM, &ts, "not allowed").await;
    assert!(
        refusal.text.contains("Deploy it from #qa"),
        "{}",
        refusal.text
    );
    assert!(
        w.gh.deployments("oursky/modmod-web").is_empty(),
        "the wrong room changes nothing"
    );

    let ts = w.say(QA, ALICE, "deploy modmod-web to edge").await;
    let live = w.reply(QA, &ts, "Deployment #").await;
    let id = w.deployment_id(&live);
    let done = w
        .slack
        .wait_for_text(QA, &live.ts, "is done in", WAIT)
        .await;
    assert!(done.text.contains("modmod-web"), "{}", done.text);
    let status = w.gh.wait_for_status(id, "success", WAIT).await;
    assert_eq!(
        w.states(id),
        ["queued", "in_progress", "success"],
        "{status}"
    );

    let main = w.gh.branch_sha("oursky/modmod-web", "main");
    let deployment = &w.gh.deployments("oursky/modmod-web")[0];
    assert_eq!(
        deployment["ref"], "main",
        "the default branch: {deployment}"
    );
    assert_eq!(deployment["sha"], main.as_str());
    assert_eq!(deployment["environment"], "edge");
    let cap = w.capistrano.as_ref().unwrap();
    let current = cap.deploy_to.join("current");
    assert_eq!(
        std::fs::read_to_string(current.join("REVISION"))
            .unwrap()
            .trim(),
        main,
        "capistrano put main's commit live"
    );
    assert_eq!(
        std::fs::read_to_string(current.join("VERSION")).unwrap(),
        "edge build\n"
    );
    assert!(
        cap.sshd.accepted_deploy_key(),
        "capistrano logged in with the deploy key: {}",
        cap.sshd.log()
    );
    let log_url = w.gh.statuses(id)[1]["log_url"].as_str().unwrap().to_owned();
    let log = w.text(format!("{log_url}/log")).await;
    assert!(log.contains("cap edge deploy"), "{log}");
    let key = cap.sshd.client_key_text();
    let secret_line = key.lines().nth(1).unwrap();
    assert!(
        !log.contains(secret_line),
        "the deploy key never reaches the log"
    );
    for message in w.slack.messages() {
        for text in message.history.iter().chain([&message.text]) {
            assert!(
                !text.contains(secret_line),
                "the deploy key never reaches chat"
            );
        }
    }
}

#[tokio::test]
async fn ci_from_chat_names_the_failing_and_pending_checks() {
    let Some(mut w) = World::start(Backend::Sqlite).await else {
        return;
    };
    w.gh.add_branch("oursky/project-x", "feature");
    let check = |name: &str, state: &str, check_run: bool| Check {
        name: name.into(),
        state: state.into(),
        url: format!("https://ci.example.com/{name}"),
        check_run,
    };
    w.gh.add_check(
        "oursky/project-x",
        "feature",
        check("ci/travis", "failure", false),
    );
    w.gh.add_check("oursky/project-x", "feature", check("e2e", "pending", true));
    w.gh.add_check(
        "oursky/project-x",
        "feature",
        check("lint", "success", true),
    );
    let ts = w.say(RANDOM, JOYZ, "ci project-x/feature").await;
    let answer = w.reply(RANDOM, &ts, "CI is").await;
    assert!(
        answer.text.contains("CI is red for project-x/feature"),
        "{}",
        answer.text
    );
    assert!(
        answer
            .text
            .contains("Failing: ci/travis (failure) https://ci.example.com/ci/travis"),
        "{}",
        answer.text
    );
    assert!(
        answer
            .text
            .contains("Pending: e2e (in_progress) https://ci.example.com/e2e"),
        "{}",
        answer.text
    );
    assert!(!answer.text.contains("lint"), "{}", answer.text);
}

e2e::both_backends!(
    developer_deploys_a_branch,
    three_users_wait_in_line,
    a_queued_deployment_survives_a_faseng_restart,
    qa_deploys_the_default_branch_to_edge_with_capistrano,
);
