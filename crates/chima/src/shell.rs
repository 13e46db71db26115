//! The terminal adapter: one command line in, one reply block out. Works with a TTY or a pipe.

use std::io::{IsTerminal, Write};

use async_trait::async_trait;
use tokio::io::{AsyncBufRead, AsyncBufReadExt};

use crate::chat::{ChatContext, MessageRef, Outbox, Reply, Tone};
use crate::handlers::Bot;

/// Renders a reply for a terminal: a tone marker, the text, and buttons as commands to type.
pub fn render(reply: &Reply) -> String {
    let marker = match reply.tone {
        Tone::Info => "",
        Tone::Progress => "… ",
        Tone::Success => "✔ ",
        Tone::Error => "✖ ",
    };
    let mut text = format!("{marker}{}", reply.text);
    for action in &reply.actions {
        text.push_str(&format!("\n  [{}] type: {}", action.label, action.command));
    }
    text
}

/// Prints replies to a writer; edits print as follow-up lines of the same block.
pub struct ShellOutbox<W: Write + Send> {
    out: W,
    room: String,
    posted: usize,
}

impl<W: Write + Send> ShellOutbox<W> {
    /// An outbox printing to `out` for messages in `room`.
    pub fn new(out: W, room: &str) -> Self {
        Self {
            out,
            room: room.to_owned(),
            posted: 0,
        }
    }

    fn write(&mut self, text: &str) {
        // A closed stdout (e.g. `| head`) must not crash the bot mid-deploy.
        let _ = writeln!(self.out, "{text}");
        let _ = self.out.flush();
    }
}

#[async_trait]
impl<W: Write + Send> Outbox for ShellOutbox<W> {
    async fn post(&mut self, reply: Reply) -> Option<MessageRef> {
        self.write(&render(&reply));
        self.posted += 1;
        Some(MessageRef {
            channel: self.room.clone(),
            id: format!("shell-{}-{}", std::process::id(), self.posted),
        })
    }

    async fn edit(&mut self, _message: &MessageRef, reply: Reply) {
        self.write(&format!("  ↳ {}", render(&reply)));
    }
}

/// Reads command lines until end of input and answers each with one reply block.
pub async fn run<R, W>(bot: &Bot, ctx: &ChatContext, input: R, output: W) -> anyhow::Result<()>
where
    R: AsyncBufRead + Unpin,
    W: Write + Send,
{
    let interactive = std::io::stdin().is_terminal();
    let mut outbox = ShellOutbox::new(output, &ctx.room_id);
    let mut lines = input.lines();
    loop {
        if interactive {
            print!("{}> ", bot.name());
            let _ = std::io::stdout().flush();
        }
        let Some(line) = lines.next_line().await? else {
            break;
        };
        if line.trim().is_empty() {
            continue;
        }
        bot.handle_message(&line, None, true, ctx, &mut outbox)
            .await;
        outbox.write("");
    }
    Ok(())
}
