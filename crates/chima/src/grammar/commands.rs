//! The grammar's table: every command with its usage, summary and examples, in the order
//! help lists them. Help and "did you mean" are generated from it; a test parses every
//! example, so the table cannot drift from the parser.

/// One command of the grammar, as help shows it.
#[derive(Debug, PartialEq, Eq)]
pub struct CommandSpec {
    /// The word that starts the command.
    pub name: &'static str,
    /// Other words that start it.
    pub aliases: &'static [&'static str],
    /// Usage line.
    pub usage: &'static str,
    /// One-line summary.
    pub summary: &'static str,
    /// Examples, without the bot name.
    pub examples: &'static [&'static str],
}

/// Every command, in the order help lists them.
pub const COMMANDS: &[CommandSpec] = &[
    CommandSpec {
        name: "deploy",
        aliases: &[],
        usage: "deploy[!][:task] <app>[/<ref>] [to <env>[/<hosts>]] [when free]",
        summary: "deploy a branch, tag or sha of an app (default: the repository's default branch to the app's default environment); `!` skips the CI checks (never a lock or freeze), `:task` runs another task (e.g. `deploy:migrate`, `deploy:lock`, `deploy:unlock`); `when free` waits in line behind a lock or freeze and deploys by itself when it is released",
        examples: &[
            "deploy project-x/feature/login to edge",
            "deploy! trelhub to pandawork",
            "deploy:migrate modmod-web/v1.2.0 to staging",
            "deploy demo/feature to staging when free",
        ],
    },
    CommandSpec {
        name: "deploys",
        aliases: &[],
        usage: "deploys <app>[/<ref>] [in <env>]",
        summary: "the 10 most recent deployments of an app, optionally of one ref or environment",
        examples: &["deploys project-x in edge", "deploys trelhub/main"],
    },
    CommandSpec {
        name: "where",
        aliases: &[],
        usage: "where can I deploy <app>",
        summary: "the app's environments and what is deployed in each",
        examples: &["where can I deploy modmod-web"],
    },
    CommandSpec {
        name: "ci",
        aliases: &["status"],
        usage: "ci <app>[/<ref>]",
        summary: "is CI green? commit statuses and check runs for a ref (default: the default branch)",
        examples: &["ci project-x/feature", "status trelhub"],
    },
    CommandSpec {
        name: "log",
        aliases: &[],
        usage: "log <id>",
        summary: "the output of a deployment run (local mode; with GitHub, follow the log link in the deployment status)",
        examples: &["log 3"],
    },
    CommandSpec {
        name: "rollback",
        aliases: &[],
        usage: "rollback <app> in <env> [to <ref>|#<deployment>]",
        summary: "deploy an earlier commit again: by default the newest earlier successful deployment there with another commit, or the commit of a ref or of a successful deployment (`#12`); an ordinary deploy (locks, freezes and approvals apply), after which the environment is locked for you until you unlock it (unless the app sets `lock_after_rollback: false`)",
        examples: &[
            "rollback demo in staging",
            "rollback demo in production to #12",
            "rollback demo on staging to v1.2.0",
        ],
    },
    CommandSpec {
        name: "stats",
        aliases: &[],
        usage: "stats <app> [in <env>] [for <period>]",
        summary: "delivery statistics per environment over a period (default 30d, at most 365d): deploys, success rate, median and p90 duration, deploys per day, change-failure rate, time to restore, and the change against the period before",
        examples: &["stats demo", "stats demo in production for 90d"],
    },
    CommandSpec {
        name: "lock",
        aliases: &[],
        usage: "lock <app> in <env> [for <duration>]: <reason>",
        summary: "hold an environment: only you may deploy there until you unlock it or it expires (default: the app's lock_ttl, 4h; at most 7d); you are reminded every lock_reminder (2h)",
        examples: &[
            "lock demo in staging for 1h: testing the migration",
            "lock project-x on live: release 1.4",
        ],
    },
    CommandSpec {
        name: "unlock",
        aliases: &[],
        usage: "unlock[!] <app> in <env>[: <reason>]",
        summary: "release your lock (the line behind it moves); `unlock!` takes someone else's lock for yourself (they are told why; audited)",
        examples: &["unlock demo in staging", "unlock! demo in staging: hotfix"],
    },
    CommandSpec {
        name: "locks",
        aliases: &[],
        usage: "locks [<app>]",
        summary: "every lock: holder, reason, since and until when",
        examples: &["locks", "locks demo"],
    },
    CommandSpec {
        name: "cancel",
        aliases: &[],
        usage: "cancel <app> in <env>",
        summary: "leave the line you joined with `deploy … when free`",
        examples: &["cancel demo in staging"],
    },
    CommandSpec {
        name: "queue",
        aliases: &[],
        usage: "queue [<app> [in <env>]]",
        summary: "for each environment: the lock, the line of waiting requests and faseng's waiting runs, with position, who, ref and ETA",
        examples: &["queue", "queue demo in staging"],
    },
    CommandSpec {
        name: "freeze",
        aliases: &[],
        usage: "freeze <app>|all [in <env>] for <duration>: <reason>",
        summary: "stop deploys of an app (or all apps), in one environment or all, for a while",
        examples: &[
            "freeze demo in production for 2h: release train",
            "freeze all for 1d: datacenter move",
        ],
    },
    CommandSpec {
        name: "unfreeze",
        aliases: &[],
        usage: "unfreeze <app> in <env> [for <duration>]: <reason>",
        summary: "lift a freeze for yourself only, for at most 1h (default 30m); announced and audited",
        examples: &["unfreeze demo in production for 30m: hotfix for the login bug"],
    },
    CommandSpec {
        name: "freezes",
        aliases: &[],
        usage: "freezes [<app>]",
        summary: "the freeze windows that are on now and those coming",
        examples: &["freezes", "freezes demo"],
    },
    CommandSpec {
        name: "audit",
        aliases: &[],
        usage: "audit <app> [in <env>] [since <duration>]",
        summary: "the newest release actions (locks, line, freezes, deploys): who, what, when, from where",
        examples: &["audit demo", "audit demo in staging since 2d"],
    },
    CommandSpec {
        name: "approve",
        aliases: &[],
        usage: "approve[!] #<request>[: <reason>]",
        summary: "approve a release request into a protected environment (never your own); `approve!` also waives red checks, with a reason (announced, audited)",
        examples: &["approve #3", "approve! #3: CI is down; docs-only change"],
    },
    CommandSpec {
        name: "reject",
        aliases: &[],
        usage: "reject #<request>: <reason>",
        summary: "reject a release request (an approver or admin); the requester is told why",
        examples: &["reject #3: no rollback notes"],
    },
    CommandSpec {
        name: "claim",
        aliases: &[],
        usage: "claim #<request>",
        summary: "a release admin takes a request to do the release (`deploy #<request>` deploys an approved one; `cancel #<request>` withdraws it)",
        examples: &["claim #3", "deploy #3", "cancel #3"],
    },
    CommandSpec {
        name: "recheck",
        aliases: &[],
        usage: "recheck #<request>",
        summary: "evaluate a request's checks again (CI, review, rollback notes, not locked)",
        examples: &["recheck #3"],
    },
    CommandSpec {
        name: "requests",
        aliases: &[],
        usage: "requests [<app>]",
        summary: "the open release requests, in order, with their checks and approvals",
        examples: &["requests", "requests demo"],
    },
    CommandSpec {
        name: "help",
        aliases: &[],
        usage: "help [command]",
        summary: "this list, or the details of one command",
        examples: &["help deploy"],
    },
    CommandSpec {
        name: "version",
        aliases: &[],
        usage: "version",
        summary: "which chima is answering",
        examples: &["version"],
    },
];
