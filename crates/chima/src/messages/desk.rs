//! What the release desk says: locks, the line, freezes and the audit. Times are shown in the
//! app's time zone and relative to now (`18:09 UTC (in 59 min)`), by [`when`].

use chrono::{DateTime, Utc};
use deploy_core::chat::{Message, Tone};
use deploy_core::desk::Tz;
use deploy_core::desk::{Blocked, FreezeOccurrence, when};
use deploy_core::{AppConfig, AppName, EnvName, Span};
use deploy_store::{AuditRecord, EnvLock, Freeze, LineRequest, UnfreezeGrant};

use super::clip;
use crate::chat::{Action, ActionKind, Reply};

fn say(tone: Tone) -> Message {
    Message::new(tone)
}

/// `app in env`, quoted.
fn place(m: Message, app: &str, env: &str) -> Message {
    m.quoted(app).text(" in ").quoted(env)
}

/// A store-less chima asked for the desk.
pub fn no_store() -> Reply {
    Reply::new(say(Tone::Error).text(
        "The release desk (locks, the line, freezes, the audit) lives in the store shared with faseng, and this chima has none: set FASENG_QUEUE_URL to faseng's. Nothing was done.",
    ))
}

/// The store did not answer.
pub fn store_failed(error: &str) -> Reply {
    Reply::new(
        say(Tone::Error)
            .text("I could not reach the release desk's store (")
            .quoted(clip(error))
            .text("). Nothing was changed; try again in a moment."),
    )
}

/// A duration over its limit.
pub fn too_long(what: &str, span: Span, max: Span) -> Reply {
    Reply::new(say(Tone::Error).text(format!(
        "{what} lasts at most {max}; {span} is too long. Nothing was done."
    )))
}

/// The lock is someone else's.
pub fn lock_refused(
    app: &AppConfig,
    env: &EnvName,
    holder: &Blocked,
    now: DateTime<Utc>,
    bot: &str,
) -> Reply {
    let m = holder.message(&app.name, env, now, app.tz());
    Reply::new(
        Message {
            tone: Tone::Error,
            ..m
        }
        .text(" It stays theirs; to take it, say ")
        .code(format!("{bot} unlock! {} in {env}: <reason>", app.name))
        .text(" (they are told)."),
    )
}

/// When `lock` ends, in the app's zone and relative to `now`, or `open_end` for a lock
/// without expiry.
pub(crate) fn lock_until(
    lock: &EnvLock,
    now: DateTime<Utc>,
    app: &AppConfig,
    open_end: &str,
) -> String {
    lock.expires_at
        .map_or_else(|| open_end.to_owned(), |end| when(end, now, app.tz()))
}

/// The speaker now holds the lock (or renewed it).
pub fn locked(
    app: &AppConfig,
    env: &EnvName,
    lock: &EnvLock,
    renewed: bool,
    now: DateTime<Utc>,
    bot: &str,
) -> Reply {
    let until = lock_until(lock, now, app, "you unlock it");
    let m = place(say(Tone::Lock), app.name.as_str(), env.as_str())
        .text(if renewed {
            " stays locked by "
        } else {
            " is locked by "
        })
        .quoted(lock.shown_name())
        .text(": ")
        .quoted(lock.reason.as_str())
        .text(format!(
            ", until {until}. Only they may deploy there; others can say "
        ))
        .code(format!(
            "{bot} deploy {}/<ref> to {env} when free",
            app.name
        ))
        .text(" to wait in line. Release it with ")
        .code(format!("{bot} unlock {} in {env}", app.name))
        .text(".");
    Reply::new(m)
}

/// Nothing to unlock.
pub fn not_locked(app: &AppName, env: &EnvName) -> Reply {
    Reply::new(
        place(say(Tone::Info), app.as_str(), env.as_str())
            .text(" is not locked. Nothing was done."),
    )
}

/// `unlock` by someone who does not hold the lock.
pub fn not_your_lock(
    app: &AppConfig,
    env: &EnvName,
    held: &EnvLock,
    now: DateTime<Utc>,
    bot: &str,
) -> Reply {
    let blocked = crate::desk::lock_blocked(held);
    let m = blocked.message(&app.name, env, now, app.tz());
    Reply::new(
        Message {
            tone: Tone::Error,
            ..m
        }
        .text(" Only ")
        .quoted(held.shown_name())
        .text(" can unlock it; to take it, say ")
        .code(format!("{bot} unlock! {} in {env}: <reason>", app.name))
        .text(". Nothing was done."),
    )
}

/// The holder released the lock.
pub fn unlocked(app: &AppName, env: &EnvName, waiting: usize) -> Reply {
    let m = place(say(Tone::Lock), app.as_str(), env.as_str()).text(" is unlocked.");
    Reply::new(match waiting {
        0 => m,
        1 => m.text(" The request waiting in line goes first."),
        n => m.text(format!(" The {n} requests waiting in line go in order.")),
    })
}

/// `unlock!` of one's own lock.
pub fn already_yours(app: &AppName, env: &EnvName) -> Reply {
    Reply::new(
        say(Tone::Info)
            .text("You already hold the lock on ")
            .quoted(app.as_str())
            .text(" in ")
            .quoted(env.as_str())
            .text(". Nothing was done."),
    )
}

/// Told to the old holder, in the lock's thread and directly.
pub fn lock_taken_from_you(
    app: &AppName,
    env: &EnvName,
    taker: &str,
    reason: Option<&str>,
) -> Reply {
    let m = say(Tone::Lock)
        .quoted(taker)
        .text(" took your lock on ")
        .quoted(app.as_str())
        .text(" in ")
        .quoted(env.as_str());
    Reply::new(match reason {
        Some(r) => m.text(": ").quoted(r).text("."),
        None => m.text(" (no reason given)."),
    })
}

/// The speaker took the lock.
pub fn taken_over(
    app: &AppConfig,
    env: &EnvName,
    old: &EnvLock,
    new: &EnvLock,
    now: DateTime<Utc>,
) -> Reply {
    let until = new
        .expires_at
        .map(|end| when(end, now, app.tz()))
        .unwrap_or_default();
    Reply::new(
        place(say(Tone::Lock), app.name.as_str(), env.as_str())
            .text(" is now locked by ")
            .quoted(new.shown_name())
            .text(" (taken over from ")
            .quoted(old.shown_name())
            .text(", who was told): ")
            .quoted(new.reason.as_str())
            .text(format!(", until {until}. The line does not move.")),
    )
}

/// The `locks` list.
pub fn locks(
    app: Option<&AppName>,
    held: &[(String, EnvLock)],
    tz_of: impl Fn(&str) -> Tz,
    now: DateTime<Utc>,
) -> Reply {
    if held.is_empty() {
        let m = say(Tone::Info).text("No locks");
        let m = match app {
            Some(a) => m.text(" on ").quoted(a.as_str()),
            None => m,
        };
        return Reply::new(m.text("."));
    }
    let mut m = say(Tone::Lock).text("Locks:");
    for (line, lock) in held {
        let (a, e) = line.split_once('/').unwrap_or((line, ""));
        let tz = tz_of(line);
        m = place(m.text("\n• "), a, e)
            .text(" — ")
            .quoted(lock.shown_name())
            .text(": ")
            .quoted(lock.reason.as_str())
            .text(format!(", since {}", when(lock.at, now, tz)));
        if let Some(end) = lock.expires_at {
            m = m.text(format!(", until {}", when(end, now, tz)));
        }
    }
    Reply::new(m)
}

/// A deploy refused by the desk, with the line offered.
pub fn deploy_refused(
    app: &AppConfig,
    env: &EnvName,
    git_ref: &deploy_core::GitRef,
    blocked: &Blocked,
    now: DateTime<Utc>,
    when_free: &str,
    user_id: &str,
) -> Reply {
    let m = blocked.message(&app.name, env, now, app.tz());
    let m = Message {
        tone: Tone::Error,
        ..m
    }
    .text(" Nothing was deployed. To deploy ")
    .quoted(git_ref.as_str())
    .text(" by itself as soon as it is free, say ")
    .code(when_free)
    .text(".");
    Reply::new(m).with_action(Action {
        kind: ActionKind::DeployWhenFree,
        label: "Deploy when free".to_owned(),
        command: when_free.to_owned(),
        only_user: Some(user_id.to_owned()),
    })
}

/// A request joined the line.
pub fn joined_line(
    app: &AppConfig,
    env: &EnvName,
    request: &LineRequest,
    position: usize,
    blocked: &Blocked,
    now: DateTime<Utc>,
    bot: &str,
) -> Reply {
    let why = blocked.message(&app.name, env, now, app.tz());
    let m = say(Tone::Waiting)
        .quoted(request.git_ref.as_str())
        .text(format!(" is #{position} in line for "))
        .quoted(app.name.as_str())
        .text(" in ")
        .quoted(env.as_str())
        .text(": it deploys by itself when the environment is free for you (until ")
        .text(when(request.expires_at, now, app.tz()))
        .text("). ");
    let mut m = m;
    m.parts.extend(why.parts);
    Reply::new(
        m.text(" Leave the line with ")
            .code(format!("{bot} cancel {} in {env}", app.name))
            .text("."),
    )
}

/// Not in that line.
pub fn not_in_line(app: &AppName, env: &EnvName) -> Reply {
    Reply::new(
        say(Tone::Info)
            .text("You are not in line for ")
            .quoted(app.as_str())
            .text(" in ")
            .quoted(env.as_str())
            .text(". Nothing was done."),
    )
}

/// Left the line.
pub fn left_line(app: &AppName, env: &EnvName, git_ref: &str) -> Reply {
    Reply::new(
        say(Tone::Info)
            .text("You left the line for ")
            .quoted(app.as_str())
            .text(" in ")
            .quoted(env.as_str())
            .text(": ")
            .quoted(git_ref)
            .text(" will not be deployed."),
    )
}

/// A run of faseng's waiting or running in an environment.
#[derive(Debug, Clone, PartialEq)]
pub struct WaitingRun {
    /// Deployment id.
    pub id: u64,
    /// Its ref.
    pub git_ref: String,
    /// Who created it.
    pub creator: String,
    /// Whether it is the one running.
    pub running: bool,
    /// When it is expected to start (or end, when running).
    pub eta: Option<DateTime<Utc>>,
}

/// One environment in `queue`.
#[derive(Debug, Clone)]
pub struct QueueRow {
    /// The app.
    pub app: AppName,
    /// The environment.
    pub env: EnvName,
    /// The app's time zone.
    pub tz: Tz,
    /// Its lock.
    pub lock: Option<EnvLock>,
    /// The requests in line, with when each may go.
    pub requests: Vec<(LineRequest, Option<DateTime<Utc>>)>,
    /// faseng's runs in the environment's line.
    pub runs: Vec<WaitingRun>,
}

impl QueueRow {
    /// Nothing locked, waiting or running.
    pub fn is_empty(&self) -> bool {
        self.lock.is_none() && self.requests.is_empty() && self.runs.is_empty()
    }
}

fn eta(m: Message, at: Option<DateTime<Utc>>, now: DateTime<Utc>, tz: Tz) -> Message {
    match at {
        Some(at) => m.text(format!(", ETA {}", when(at, now, tz))),
        None => m.text(", ETA unknown"),
    }
}

/// The `queue` answer.
pub fn queue(rows: &[QueueRow], now: DateTime<Utc>) -> Reply {
    if rows.iter().all(QueueRow::is_empty) && rows.len() != 1 {
        return Reply::new(say(Tone::Info).text("Nothing is locked, waiting or deploying."));
    }
    let mut m = say(Tone::Info).text("Queue:");
    for row in rows {
        m = place(m.text("\n• "), row.app.as_str(), row.env.as_str()).text(" — ");
        m = match &row.lock {
            Some(lock) => {
                let m = m.text("locked by ").quoted(lock.shown_name());
                match lock.expires_at {
                    Some(end) => m.text(format!(" until {}", when(end, now, row.tz))),
                    None => m,
                }
            }
            None => m.text("not locked"),
        };
        if row.runs.is_empty() && row.requests.is_empty() {
            m = m.text("; nothing waiting");
        }
        let mut position = 0;
        for run in &row.runs {
            position += 1;
            let state = if run.running { "deploying" } else { "queued" };
            m = m
                .text(format!("\n   {position}. #{} ", run.id))
                .quoted(run.git_ref.as_str())
                .text(" by ")
                .quoted(run.creator.as_str())
                .text(format!(" — {state}"));
            if !run.running {
                m = eta(m, run.eta, now, row.tz);
            }
        }
        for (request, at) in &row.requests {
            position += 1;
            m = m
                .text(format!("\n   {position}. "))
                .quoted(request.git_ref.as_str())
                .text(" by ")
                .quoted(request.user_name.as_str())
                .text(" — waiting in line");
            m = eta(m, *at, now, row.tz);
        }
    }
    Reply::new(m)
}

/// A freeze made in chat.
pub fn frozen_now(freeze: &Freeze, by: &str, now: DateTime<Utc>, tz: Tz) -> Reply {
    let m = say(Tone::Warning);
    let m = match &freeze.app {
        Some(app) => m.quoted(app.as_str()),
        None => m.text("Every app"),
    };
    let m = match &freeze.environment {
        Some(env) => m.text(" in ").quoted(env.as_str()),
        None => m,
    };
    Reply::new(
        m.text(" is frozen by ")
            .quoted(by)
            .text(": ")
            .quoted(freeze.reason.as_str())
            .text(format!(
                ", until {}. Deploys there are refused until then; `unfreeze` lifts it for one person.",
                when(freeze.until, now, tz)
            )),
    )
}

/// Nothing to unfreeze.
pub fn not_frozen(app: &AppName, env: &EnvName) -> Reply {
    Reply::new(
        place(say(Tone::Info), app.as_str(), env.as_str())
            .text(" is not frozen. Nothing was done."),
    )
}

/// An unfreeze granted, announced in the room.
pub fn unfrozen(
    app: &AppConfig,
    env: &EnvName,
    user: &str,
    reason: &str,
    freeze: &Blocked,
    until: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Reply {
    let m = say(Tone::Warning)
        .quoted(user)
        .text(" lifted the freeze on ")
        .quoted(app.name.as_str())
        .text(" in ")
        .quoted(env.as_str())
        .text(" for themselves only, until ")
        .text(when(until, now, app.tz()))
        .text(": ")
        .quoted(reason)
        .text(". The freeze stays for everyone else (");
    let mut m = m;
    m.parts
        .extend(freeze.message(&app.name, env, now, app.tz()).parts);
    Reply::new(m.text(")."))
}

/// The `freezes` list.
pub fn freezes(
    app: Option<&AppName>,
    configured: &[(&AppConfig, FreezeOccurrence)],
    ad_hoc: &[Freeze],
    unfreezes: &[UnfreezeGrant],
    now: DateTime<Utc>,
    tz: Tz,
) -> Reply {
    if configured.is_empty() && ad_hoc.is_empty() {
        let m = say(Tone::Info).text("No freezes on now or coming");
        let m = match app {
            Some(a) => m.text(" for ").quoted(a.as_str()),
            None => m,
        };
        return Reply::new(m.text("."));
    }
    let mut m = say(Tone::Warning).text("Freezes:");
    for (a, o) in configured {
        let state = if o.is_active(now) { "on now" } else { "coming" };
        m = m.text("\n• ").quoted(a.name.as_str()).text(" in ");
        m = match &o.environments {
            Some(envs) => {
                let names: Vec<&str> = envs.iter().map(EnvName::as_str).collect();
                m.quoted(names.join(", "))
            }
            None => m.text("every environment"),
        };
        m = m
            .text(format!(
                " — {state}, {} to {}: ",
                when(o.interval.start, now, a.tz()),
                when(o.interval.end, now, a.tz())
            ))
            .quoted(o.reason.as_str())
            .text(" (app.json)");
    }
    for f in ad_hoc {
        let state = if f.active(now) { "on now" } else { "coming" };
        m = m.text("\n• ");
        m = match &f.app {
            Some(a) => m.quoted(a.as_str()),
            None => m.text("every app"),
        };
        m = m.text(" in ");
        m = match &f.environment {
            Some(e) => m.quoted(e.as_str()),
            None => m.text("every environment"),
        };
        m = m
            .text(format!(" — {state}, until {}: ", when(f.until, now, tz)))
            .quoted(f.reason.as_str())
            .text(" (by ")
            .quoted(if f.by_name.is_empty() {
                &f.by
            } else {
                &f.by_name
            })
            .text(")");
    }
    for g in unfreezes {
        m = m
            .text("\n• lifted for ")
            .quoted(g.user_name.as_str())
            .text(" on ")
            .quoted(g.app.as_str())
            .text(" in ")
            .quoted(g.environment.as_str())
            .text(format!(" until {}: ", when(g.until, now, tz)))
            .quoted(g.reason.as_str());
    }
    Reply::new(m)
}

/// The `audit` list, newest first.
pub fn audit(
    app: &AppName,
    env: Option<&EnvName>,
    since: Option<Span>,
    entries: &[AuditRecord],
    now: DateTime<Utc>,
    tz: Tz,
) -> Reply {
    let scope = |m: Message| {
        let m = m.quoted(app.as_str());
        let m = match env {
            Some(e) => m.text(" in ").quoted(e.as_str()),
            None => m,
        };
        match since {
            Some(s) => m.text(format!(" in the last {s}")),
            None => m,
        }
    };
    if entries.is_empty() {
        return Reply::new(scope(say(Tone::Info).text("No release actions for ")).text(" yet."));
    }
    let mut m = scope(say(Tone::Info).text("Release actions for ")).text(", newest first:");
    for record in entries {
        let e = &record.entry;
        m = m
            .text(format!("\n• {} — ", when(e.at, now, tz)))
            .quoted(if e.actor_name.is_empty() {
                &e.actor
            } else {
                &e.actor_name
            })
            .text(format!(" {}", e.action.as_str()));
        if let Some(env) = &e.environment {
            m = m.text(" ").quoted(env.as_str());
        }
        if let Some(r) = &e.git_ref {
            m = m.text(" ").quoted(r.as_str());
            if let Some(sha) = &e.sha {
                m = m.text("@").quoted(sha.get(..7).unwrap_or(sha));
            }
        }
        if !e.detail.is_empty() {
            m = m.text(": ").quoted(clip(&e.detail));
        }
        if let Some(room) = &e.room {
            m = m.text(" (from ").quoted(room.as_str()).text(")");
        }
    }
    Reply::new(m)
}

/// Said in a lock's thread when it ran out.
pub fn lock_expired(app: &str, env: &str, lock: &EnvLock, now: DateTime<Utc>, tz: Tz) -> Reply {
    Reply::new(
        place(say(Tone::Lock), app, env)
            .text(" is unlocked: the lock of ")
            .quoted(lock.shown_name())
            .text(" (")
            .quoted(lock.reason.as_str())
            .text(format!(
                ") ran out at {}.",
                lock.expires_at
                    .map(|e| when(e, now, tz))
                    .unwrap_or_default()
            )),
    )
}

/// The holder's reminder, with buttons to extend or unlock.
pub fn lock_reminder(
    app: &AppConfig,
    env: &EnvName,
    lock: &EnvLock,
    now: DateTime<Utc>,
    bot: &str,
) -> Reply {
    let until = lock_until(lock, now, app, "you unlock it");
    let extend = format!(
        "{bot} lock {} in {env} for {}: {}",
        app.name,
        app.lock_ttl(),
        lock.reason
    );
    let unlock = format!("{bot} unlock {} in {env}", app.name);
    Reply::new(
        say(Tone::Lock)
            .text("Reminder: ")
            .quoted(lock.shown_name())
            .text(", you hold ")
            .quoted(app.name.as_str())
            .text(" in ")
            .quoted(env.as_str())
            .text(" (")
            .quoted(lock.reason.as_str())
            .text(format!(") until {until}. Still need it? Say "))
            .code(extend.clone())
            .text(" to extend it, or ")
            .code(unlock.clone())
            .text("."),
    )
    .with_action(Action {
        kind: ActionKind::ExtendLock,
        label: format!("Extend {}", app.lock_ttl()),
        command: extend,
        only_user: Some(lock.user.clone()),
    })
    .with_action(Action {
        kind: ActionKind::Unlock,
        label: "Unlock".to_owned(),
        command: unlock,
        only_user: Some(lock.user.clone()),
    })
}

/// A request moved up the line.
pub fn moved_up(git_ref: &str, line: &str, position: usize) -> Reply {
    let (app, env) = line.split_once('/').unwrap_or((line, ""));
    Reply::new(
        say(Tone::Waiting)
            .quoted(git_ref)
            .text(format!(" is now #{position} in line for "))
            .quoted(app)
            .text(" in ")
            .quoted(env)
            .text("."),
    )
}

/// A request's turn came.
pub fn your_turn(app: &AppConfig, env: &EnvName, git_ref: &str, user: &str) -> Reply {
    Reply::new(
        say(Tone::Started)
            .quoted(user)
            .text(", ")
            .quoted(app.name.as_str())
            .text(" in ")
            .quoted(env.as_str())
            .text(" is free: deploying ")
            .quoted(git_ref)
            .text(" as you asked."),
    )
}

/// A request in line ran out.
pub fn line_request_expired(request: &LineRequest, bot: &str) -> Reply {
    let (app, env) = request.line.split_once('/').unwrap_or((&request.line, ""));
    Reply::new(
        say(Tone::Warning)
            .quoted(request.git_ref.as_str())
            .text(" left the line for ")
            .quoted(app)
            .text(" in ")
            .quoted(env)
            .text(
                ": it waited as long as the app's lock_ttl. Nothing was deployed; ask again with ",
            )
            .code(format!("{bot} {} when free", request.command))
            .text("."),
    )
}

#[cfg(test)]
mod tests;
