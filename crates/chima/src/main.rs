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

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    if let Err(e) = deploy_core::server::raise_open_files_limit() {
        tracing::warn!(error = %e, "could not raise the open files limit");
    }
    let apps = match Apps::load(&cli.apps_json) {
        Ok(apps) => apps,
        Err(e) => {
            eprint!("chima: {e}");
            eprintln!(
                "chima: nothing was started; fix {} and try again.",
                cli.apps_json.display()
            );
            return ExitCode::from(2);
        }
    };
    match run(cli, apps).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("chima: {e:#}");
            ExitCode::FAILURE
        }
    }
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
            let bot = Arc::new(chima::cli::github_bot(
                apps,
                &cli.github_api_url,
                auth,
                &cli.name,
            ));
            serve(bot, args).await
        }
        Command::Shell(args) => {
            let ctx = ChatContext::shell(&args.room, &args.user);
            let stdin = tokio::io::BufReader::new(tokio::io::stdin());
            let Some(auth) = auth else {
                return local_shell(apps, args, &cli, ctx).await;
            };
            let bot = chima::cli::github_bot(apps, &cli.github_api_url, auth, &cli.name);
            eprintln!(
                "{} ready: GitHub mode ({}), {} apps from {}, room #{} as {}. Type `{} help`.",
                cli.name,
                cli.github_api_url,
                bot.apps().len(),
                cli.apps_json.display(),
                args.room,
                args.user,
                cli.name
            );
            chima::shell::run(&bot, &ctx, stdin, std::io::stdout(), None, Duration::ZERO)
                .await
                .context("reading commands from stdin")
        }
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
    let local = chima::local::LocalMode::start(apps, &args.local_settings(), &cli.name)
        .await
        .context("starting local mode")?;
    eprintln!(
        "{} ready: local mode (no GITHUB_TOKEN): deployments recorded in {}, run by an in-process faseng worker, logs at {}. {} apps from {}, room #{} as {}. Try `{} deploy demo to staging`.",
        cli.name,
        args.local_db.display(),
        local.public_url,
        local.bot.apps().len(),
        cli.apps_json.display(),
        args.room,
        args.user,
        cli.name
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
    )
    .await
    .context("reading commands from stdin");
    local
        .stop()
        .await
        .context("stopping the in-process faseng")?;
    finished
}

async fn serve(bot: Arc<Bot>, args: &ServeArgs) -> anyhow::Result<()> {
    let web = Arc::new(SlackWeb::new(&args.slack_api_url, &args.slack_bot_token)?);
    let bot_user_id = web
        .bot_user_id()
        .await
        .context("asking Slack who the bot is (auth.test); check SLACK_BOT_TOKEN")?;
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
    let shutdown = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    match (&args.slack_app_token, &args.slack_signing_secret) {
        (Some(app_token), _) => {
            eprintln!(
                "{} ready: Slack Socket Mode as {bot_user_id}, {} apps, healthz on {}",
                bot.name(),
                bot.apps().len(),
                args.bind
            );
            let health = axum::Router::new()
                .route("/healthz", axum::routing::get(chima::slack::http::healthz));
            tokio::spawn(deploy_core::server::run(
                listener,
                health,
                args.http_limits(),
                std::future::pending(),
            ));
            chima::slack::socket::run(app, &web, app_token).await
        }
        (None, Some(secret)) => {
            eprintln!(
                "{} ready: Slack Events API on http://{} (/slack/events, /slack/commands, /slack/interactions) as {bot_user_id}, {} apps",
                bot.name(),
                listener.local_addr()?,
                bot.apps().len()
            );
            deploy_core::server::run(
                listener,
                chima::slack::http::router(app, secret),
                args.http_limits(),
                shutdown,
            )
            .await;
            Ok(())
        }
        (None, None) => anyhow::bail!(
            "chima serve needs SLACK_SIGNING_SECRET (Events API over HTTP) or SLACK_APP_TOKEN (Socket Mode)"
        ),
    }
}
