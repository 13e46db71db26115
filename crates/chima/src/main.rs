use std::process::ExitCode;

use anyhow::Context as _;
use chima::chat::ChatContext;
use chima::cli::{Cli, Command};
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
        Command::Shell(args) => {
            let Some(auth) = auth else {
                anyhow::bail!(
                    "chima shell needs GITHUB_TOKEN (or GITHUB_APP_ID + GITHUB_APP_PRIVATE_KEY) to create deployments"
                );
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
            let ctx = ChatContext::shell(&args.room, &args.user);
            let stdin = tokio::io::BufReader::new(tokio::io::stdin());
            chima::shell::run(&bot, &ctx, stdin, std::io::stdout())
                .await
                .context("reading commands from stdin")
        }
    }
}
