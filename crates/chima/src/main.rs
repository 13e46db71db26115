use std::process::ExitCode;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use chima::Bot;
use chima::chat::ChatContext;
use chima::cli::ServeArgs;
use chima::cli::{Cli, Command};
use chima::slack::app::{SlackApp, SlackSettings};
use chima::slack::web::SlackWeb;
use clap::Parser;
use deploy_core::Apps;
use deploy_core::logging::{self, LogFormat};
use tracing::Level;

/// How long a stopping `chima serve` waits for the commands it already acknowledged.
const DRAIN_WITHIN: Duration = Duration::from_secs(30);

/// A line chima shows whatever the log filter (banners, fatal errors); JSON with
/// `LOG_FORMAT=json`.
fn say(level: Level, message: &str) {
    logging::say(level, "chima", message);
}

#[tokio::main]
async fn main() -> ExitCode {
    logging::init(LogFormat::from_process(), "warn", logging::Stream::Stderr);
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if !logging::is_json() || !e.use_stderr() => e.exit(),
        Err(e) => {
            say(Level::ERROR, &e.render().to_string());
            return ExitCode::from(2);
        }
    };
    if let Err(e) = deploy_core::server::raise_open_files_limit() {
        tracing::warn!(error = %e, "could not raise the open files limit");
    }
    let apps = match Apps::load(&cli.apps_json) {
        Ok(apps) => apps,
        Err(e) => {
            let advice = format!(
                "nothing was started; fix {} and try again.",
                cli.apps_json.display()
            );
            if logging::is_json() {
                say(Level::ERROR, &format!("{e}{advice}"));
            } else {
                eprint!("chima: {e}");
                eprintln!("chima: {advice}");
            }
            return ExitCode::from(2);
        }
    };
    match run(cli, apps).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            say(Level::ERROR, &format!("chima: {e:#}"));
            ExitCode::FAILURE
        }
    }
}

/// Resolves on SIGTERM or SIGINT.
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "no SIGTERM handler; stopping on Ctrl-C only");
            let _ = tokio::signal::ctrl_c().await;
        }
    }
    tracing::info!("stopping: no new requests; finishing the ones under way");
}

async fn run(cli: Cli, apps: Apps) -> anyhow::Result<()> {
    let auth = cli.github_auth()?;
    match &cli.command {
        Command::Serve(args) => {
            let Some(auth) = auth else {
                anyhow::bail!(
                    "chima serve needs GITHUB_TOKEN (or GITHUB_APP_ID + GITHUB_APP_PRIVATE_KEY)"
                );
            };
            let mut bot = chima::cli::github_bot(apps, &cli.github_api_url, auth, &cli.name)
                .with_jira(cli.jira()?);
            if let Some((store, fresh)) = cli.shared_store().await? {
                say(Level::INFO, &store_banner(&store, fresh));
                bot = bot.with_store(store);
            }
            serve(Arc::new(bot), args, cli.desk_tick()).await
        }
        Command::Audit(args) => {
            let Some((store, _)) = cli.shared_store().await? else {
                anyhow::bail!("no store to read the audit from: set FASENG_QUEUE_URL to faseng's");
            };
            let mut out = std::io::stdout().lock();
            chima::desk::export::write(store.store().as_ref(), args, chrono::Utc::now(), &mut out)
                .await
                .context("reading the audit")?;
            Ok(())
        }
        Command::Shell(args) => {
            let ctx = ChatContext::shell(&args.room, &args.user);
            let stdin = tokio::io::BufReader::new(tokio::io::stdin());
            let Some(auth) = auth else {
                return local_shell(apps, args, &cli, ctx).await;
            };
            let mut bot = chima::cli::github_bot(apps, &cli.github_api_url, auth, &cli.name)
                .with_jira(cli.jira()?);
            let shown = match cli.shared_store().await? {
                Some((store, fresh)) => {
                    if fresh {
                        say(Level::WARN, &store_banner(&store, fresh));
                    }
                    let shown = format!("store {}", store.describe());
                    bot = bot.with_store(store);
                    shown
                }
                None => "no store: the release desk is off".to_owned(),
            };
            say(
                Level::INFO,
                &format!(
                    "{} ready: GitHub mode ({}, {shown}), {} apps from {}, room #{} as {}. Type `{} help`.",
                    cli.name,
                    cli.github_api_url,
                    bot.apps().len(),
                    cli.apps_json.display(),
                    args.room,
                    args.user,
                    cli.name
                ),
            );
            chima::shell::run(
                &bot,
                &ctx,
                stdin,
                std::io::stdout(),
                None,
                Duration::ZERO,
                cli.desk_tick(),
            )
            .await
            .context("reading commands from stdin")
        }
    }
}

/// Which store the release desk uses, and a warning when no faseng seems to share it.
fn store_banner(store: &chima::store::StoreHandle, fresh: bool) -> String {
    if fresh {
        format!(
            "the release desk's store {} is new: no faseng has used it yet. Locks, freezes and the line are shared with faseng only when both name the same FASENG_QUEUE_URL.",
            store.describe()
        )
    } else {
        format!(
            "release desk: store {} (shared with faseng)",
            store.describe()
        )
    }
}

async fn local_shell(
    apps: Apps,
    args: &chima::cli::ShellArgs,
    cli: &Cli,
    ctx: ChatContext,
) -> anyhow::Result<()> {
    let longest = apps
        .iter()
        .filter_map(|a| a.timeout)
        .max()
        .unwrap_or(0)
        .max(args.deployment_timeout);
    let local = chima::local::LocalMode::start(
        apps,
        &args.local_settings(cli.queue_url.as_deref()),
        &cli.name,
    )
    .await
    .context("starting local mode")?;
    say(
        Level::INFO,
        &format!(
            "{} ready: local mode (no GITHUB_TOKEN): deployments recorded in {}, run by an in-process faseng worker; the dashboard and logs at {}/ (this machine only). {} apps from {}, room #{} as {}. Try `{} deploy demo to staging`.",
            cli.name,
            args.local_db.display(),
            local.public_url,
            local.bot.apps().len(),
            cli.apps_json.display(),
            args.room,
            args.user,
            cli.name
        ),
    );
    let mut local = local;
    let events = std::mem::replace(&mut local.events, tokio::sync::mpsc::unbounded_channel().1);
    let stdin = tokio::io::BufReader::new(tokio::io::stdin());
    let finished = chima::shell::run(
        &local.bot,
        &ctx,
        stdin,
        std::io::stdout(),
        Some(events),
        Duration::from_secs(longest + 30),
        cli.desk_tick(),
    )
    .await
    .context("reading commands from stdin");
    local
        .stop()
        .await
        .context("stopping the in-process faseng")?;
    finished
}

async fn serve(bot: Arc<Bot>, args: &ServeArgs, desk_tick: Duration) -> anyhow::Result<()> {
    let web = Arc::new(SlackWeb::new(&args.slack_api_url, &args.slack_bot_token)?);
    let bot_user_id = web
        .bot_user_id()
        .await
        .context("asking Slack who the bot is (auth.test); check SLACK_BOT_TOKEN")?;
    let poster: Arc<dyn chima::chat::Poster> =
        Arc::new(chima::slack::poster::SlackPoster::new(web.clone()));
    bot.set_poster(poster.clone());
    let settings = SlackSettings {
        watchdog: Duration::from_secs(args.watchdog_secs),
    };
    let app = Arc::new(SlackApp::new(
        bot.clone(),
        web.clone(),
        &bot_user_id,
        settings,
    ));
    let listener = tokio::net::TcpListener::bind(&args.bind)
        .await
        .with_context(|| format!("binding {}", args.bind))?;
    // SIGTERM (or Ctrl-C) stops taking requests and events; those under way are finished
    // (the HTTP requests, then the commands they acknowledged), and chima exits 0.
    let (stop, stopped) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown_signal().await;
        let _ = stop.send(true);
    });
    let stop_signal = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    // The desk's clockwork (off with CHIMA_DESK_TICK_SECS=0) and the dashboard's web actions.
    let desk = bot.desk().is_some().then(|| {
        let holder = format!("{}:{}", deploy_core::server::hostname(), std::process::id());
        tokio::spawn(chima::desk::ticker::run(
            bot.clone(),
            poster,
            desk_tick,
            holder,
            stop_signal(stopped.clone()),
        ))
    });
    match (&args.slack_app_token, &args.slack_signing_secret) {
        (Some(app_token), _) => {
            say(
                Level::INFO,
                &format!(
                    "{} ready: Slack Socket Mode as {bot_user_id}, {} apps, healthz on {}",
                    bot.name(),
                    bot.apps().len(),
                    args.bind
                ),
            );
            let health = axum::Router::new()
                .route("/healthz", axum::routing::get(chima::slack::http::healthz));
            let health = tokio::spawn(deploy_core::server::run(
                listener,
                health,
                args.http_limits(),
                stop_signal(stopped.clone()),
            ));
            chima::slack::socket::run(app.clone(), &web, app_token, stop_signal(stopped)).await?;
            finish(&app).await;
            let _ = health.await;
            if let Some(desk) = desk {
                let _ = desk.await;
            }
            Ok(())
        }
        (None, Some(secret)) => {
            say(
                Level::INFO,
                &format!(
                    "{} ready: Slack Events API on http://{} (/slack/events, /slack/commands, /slack/interactions) as {bot_user_id}, {} apps",
                    bot.name(),
                    listener.local_addr()?,
                    bot.apps().len()
                ),
            );
            deploy_core::server::run(
                listener,
                chima::slack::http::router(app.clone(), secret),
                args.http_limits(),
                stop_signal(stopped),
            )
            .await;
            finish(&app).await;
            if let Some(desk) = desk {
                let _ = desk.await;
            }
            Ok(())
        }
        (None, None) => anyhow::bail!(
            "chima serve needs SLACK_SIGNING_SECRET (Events API over HTTP) or SLACK_APP_TOKEN (Socket Mode)"
        ),
    }
}

/// Waits for the commands already acknowledged, then says chima stopped.
async fn finish(app: &SlackApp) {
    let left = app.drain(DRAIN_WITHIN).await;
    if left > 0 {
        tracing::warn!(
            commands = left,
            "stopping with commands still being handled after {DRAIN_WITHIN:?}"
        );
    }
    say(Level::INFO, "chima stopped");
}
