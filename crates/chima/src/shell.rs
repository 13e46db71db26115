//! The terminal adapter: one command line in, one reply block out. Works with a TTY or a pipe.

use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use tokio::io::{AsyncBufRead, AsyncBufReadExt};
use tokio::sync::mpsc;

use deploy_core::chat::plain;

use crate::chat::{ChatContext, MessageRef, Outbox, Poster, Reply};
use crate::handlers::{Bot, DeployResult};
use crate::local::StatusEvent;
use deploy_store::ChatThread;

/// Renders a reply for a terminal: the message as plain text (a tone marker, the text, every
/// quoted value shown as typed), and buttons as commands to type.
pub fn render(reply: &Reply) -> String {
    let mut text = plain::render(&reply.message);
    for action in &reply.actions {
        text.push_str(&format!("\n  [{}] type: {}", action.label, action.command));
    }
    text
}

/// A writer shared by the reply printer and the status printer.
pub struct SharedWriter<W: Write + Send>(Arc<Mutex<W>>);

impl<W: Write + Send> Clone for SharedWriter<W> {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

impl<W: Write + Send> SharedWriter<W> {
    /// Wraps a writer.
    pub fn new(w: W) -> Self {
        Self(Arc::new(Mutex::new(w)))
    }

    /// Writes one line and flushes; a closed stdout (e.g. `| head`) must not crash the bot.
    pub fn line(&self, text: &str) {
        let mut w = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let _ = writeln!(w, "{text}");
        let _ = w.flush();
    }
}

/// Prints replies; edits print as follow-up lines of the same block.
pub struct ShellOutbox<W: Write + Send> {
    out: SharedWriter<W>,
    room: String,
    posted: usize,
}

impl<W: Write + Send> ShellOutbox<W> {
    /// An outbox printing to `out` for messages in `room`.
    pub fn new(out: SharedWriter<W>, room: &str) -> Self {
        Self {
            out,
            room: room.to_owned(),
            posted: 0,
        }
    }
}

#[async_trait]
impl<W: Write + Send> Outbox for ShellOutbox<W> {
    async fn post(&mut self, reply: Reply) -> Option<MessageRef> {
        self.out.line(&render(&reply));
        self.posted += 1;
        Some(MessageRef {
            channel: self.room.clone(),
            id: format!("shell-{}-{}", std::process::id(), self.posted),
        })
    }

    async fn edit(&mut self, _message: &MessageRef, reply: Reply) {
        self.out.line(&format!("  ↳ {}", render(&reply)));
    }
}

/// How the bot speaks in the terminal when no command is being answered: into the same
/// output, a thread shown as the room, a direct message marked with whom it is for.
pub struct ShellPoster<W: Write + Send> {
    out: SharedWriter<W>,
}

impl<W: Write + Send> ShellPoster<W> {
    /// A poster writing to `out`.
    pub fn new(out: SharedWriter<W>) -> Self {
        Self { out }
    }
}

#[async_trait]
impl<W: Write + Send + 'static> Poster for ShellPoster<W> {
    fn outbox(&self, thread: &ChatThread, _user_id: &str) -> Box<dyn Outbox> {
        Box::new(ShellOutbox::new(self.out.clone(), &thread.room))
    }

    async fn direct(&self, user_id: &str, reply: Reply) {
        self.out
            .line(&format!("(to {user_id} only) {}", render(&reply)));
    }
}

/// `as <user>`: who speaks for the lines after it (a terminal is trusted).
fn speaker_switch(line: &str) -> Option<&str> {
    let mut words = line.split_whitespace();
    match (words.next(), words.next(), words.next()) {
        (Some(a), Some(user), None) if a.eq_ignore_ascii_case("as") => Some(user),
        _ => None,
    }
}

/// Deployments started from this shell that have not finished yet.
struct Pending {
    started: HashMap<u64, (String, Instant)>,
}

impl Pending {
    fn track(&mut self, results: Vec<DeployResult>) {
        for result in results {
            if let DeployResult::Created { id, app, .. } = result {
                self.started.insert(id, (format!(" {app}"), Instant::now()));
            }
        }
    }

    fn line(&mut self, event: &StatusEvent) -> String {
        let (label, at) = self
            .started
            .get(&event.deployment_id)
            .cloned()
            .unwrap_or_else(|| (String::new(), Instant::now()));
        let state = match event.state.as_str() {
            "in_progress" => "running".to_owned(),
            s if event.is_final() => format!("{s} in {:.1} s", at.elapsed().as_secs_f64()),
            s => s.to_owned(),
        };
        let mut text = format!(
            "  ↳ #{}{label}: {state} — {}",
            event.deployment_id, event.description
        );
        if event.is_final() {
            self.started.remove(&event.deployment_id);
            text.push_str(&format!(" (log: `log {}`", event.deployment_id));
            if let Some(url) = &event.log_url {
                text.push_str(&format!(", {url}"));
            }
            text.push(')');
        }
        text
    }
}

/// Reads command lines until end of input and answers each with one reply block. In local
/// mode `events` carries status changes, printed as they happen; at the end of input the
/// shell waits (at most `finish_within`) for the deployments it started to finish.
///
/// The line `as <user>` makes `<user>` the speaker of the lines after it. Every `tick`, the
/// release desk's clockwork runs (locks that ran out, reminders, the line, automatic
/// rollbacks); what it says is printed like any reply, and the deployments it starts are
/// waited for like typed ones. About once a second, the dashboard's web actions are carried
/// out (their replies are stored for the dashboard, not printed).
pub async fn run<R, W>(
    bot: &Bot,
    ctx: &ChatContext,
    input: R,
    output: W,
    mut events: Option<mpsc::UnboundedReceiver<StatusEvent>>,
    finish_within: Duration,
    tick: Duration,
) -> anyhow::Result<()>
where
    R: AsyncBufRead + Unpin,
    W: Write + Send + 'static,
{
    let interactive = std::io::stdin().is_terminal();
    let out = SharedWriter::new(output);
    let poster = std::sync::Arc::new(ShellPoster::new(out.clone()));
    bot.set_poster(poster.clone());
    let mut ctx = ctx.clone();
    let mut outbox = ShellOutbox::new(out.clone(), &ctx.room_id);
    let mut pending = Pending {
        started: HashMap::new(),
    };
    let mut ticker = tokio::time::interval(tick.max(Duration::from_secs(1)));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.tick().await;
    let mut web = tokio::time::interval(crate::web_actions::EVERY);
    web.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let holder = format!("{}-shell:{}", bot.name(), std::process::id());
    let mut lines = input.lines();
    // The prompt is shown again only after something was said (not after a quiet tick).
    let mut prompt = true;
    loop {
        if interactive && prompt {
            print!("{}> ", bot.name());
            let _ = std::io::stdout().flush();
            prompt = false;
        }
        let line = tokio::select! {
            line = lines.next_line() => line?,
            Some(event) = next_event(&mut events) => {
                out.line(&pending.line(&event));
                prompt = true;
                continue;
            }
            _ = ticker.tick(), if !tick.is_zero() => {
                match bot.desk_tick(poster.as_ref()).await {
                    Ok(report) => {
                        prompt = report != Default::default();
                        pending.track(report.deployed);
                    }
                    Err(e) => tracing::warn!(error = %format!("{e:#}"), "the release desk's tick failed"),
                }
                continue;
            }
            _ = web.tick(), if bot.desk().is_some() => {
                match bot.web_actions_step(&holder).await {
                    Ok(report) => pending.track(report.deployed),
                    Err(e) => tracing::warn!(error = %format!("{e:#}"), "web actions could not be read"),
                }
                continue;
            }
        };
        prompt = true;
        let Some(line) = line else { break };
        if line.trim().is_empty() {
            continue;
        }
        if let Some(user) = speaker_switch(&line) {
            ctx.user_id = user.to_owned();
            ctx.user_name = user.to_owned();
            outbox.post(crate::messages::speaking_as(user)).await;
            out.line("");
            continue;
        }
        let results = bot.handle_message(&line, true, &ctx, &mut outbox).await;
        pending.track(results);
        out.line("");
    }
    if events.is_none() || pending.started.is_empty() {
        return Ok(());
    }
    let deadline = tokio::time::Instant::now() + finish_within;
    while !pending.started.is_empty() {
        match tokio::time::timeout_at(deadline, next_event(&mut events)).await {
            Ok(Some(event)) => out.line(&pending.line(&event)),
            Ok(None) => break,
            Err(_) => {
                let ids: Vec<String> = pending.started.keys().map(|id| format!("#{id}")).collect();
                out.line(&format!(
                    "Stopped waiting after {} s for {} (still not finished).",
                    finish_within.as_secs(),
                    ids.join(", ")
                ));
                break;
            }
        }
    }
    Ok(())
}

async fn next_event(
    events: &mut Option<mpsc::UnboundedReceiver<StatusEvent>>,
) -> Option<StatusEvent> {
    match events {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}
