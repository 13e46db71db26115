//! The hostile input corpus (issue #7): chat commands for chima and deployment webhook shapes
//! for faseng, each with a name, a category, the input and what must happen to it.
//!
//! Injection attempts all try to `touch` one canary file; the tests assert it never exists.
//! The canary path is passed in so that it can live in a directory without `.` components
//! (a `/tmp/.tmpXXXX` path would make refs invalid by accident and prove nothing).

use serde_json::{Value, json};

/// What kind of hostility an input carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Category {
    /// `;`, `$(...)`, backticks, `|`, `&&`, newlines.
    ShellMetacharacters,
    /// `--upload-pack=...`, `-c core.sshCommand=...`, `ext::` helpers.
    OptionInjection,
    /// `../../etc/passwd`, `..`, absolute paths.
    PathTraversal,
    /// Cyrillic look-alikes, fullwidth letters, RTL overrides, zero-width characters.
    UnicodeConfusables,
    /// NUL, BEL, ESC and friends.
    ControlCharacters,
    /// Strings of a megabyte and more.
    Huge,
    /// JSON nested far past any sane depth.
    DeepNesting,
    /// A number where a string belongs, an array where an object belongs, `null`.
    WrongTypes,
    /// Required fields left out.
    MissingFields,
    /// The same key twice in one object.
    DuplicateKeys,
    /// Bytes that are not UTF-8 (raw, overlong, lone surrogates).
    InvalidUtf8,
    /// Markup that would run in a browser if a page echoed it raw, or ping, mention or link
    /// if chat quoted it raw.
    Markup,
}

/// A chat message for chima and the phrase its refusal must contain.
#[derive(Debug, Clone)]
pub struct ChatCase {
    /// Shown when the case fails.
    pub name: &'static str,
    /// Its kind of hostility.
    pub category: Category,
    /// The whole message, bot address included.
    pub text: String,
    /// A phrase the refusal must contain: it says what is wrong.
    pub says: &'static str,
}

/// How a webhook case turns a correct `deployment` webhook body into a hostile one.
#[derive(Debug, Clone)]
pub enum Edit {
    /// Sets the key at a JSON pointer, adding it when missing (its parent must be an object).
    Set(&'static str, Value),
    /// Removes the key at a JSON pointer.
    Remove(&'static str),
    /// Replaces the first occurrence of `find` in the compact serialized body with raw bytes.
    Splice {
        /// Text to look for (it must occur).
        find: &'static str,
        /// What to put there, byte for byte.
        with: Vec<u8>,
    },
    /// Sets the key at a JSON pointer to raw bytes that need not be valid JSON or UTF-8.
    SetRaw(&'static str, Vec<u8>),
    /// Replaces the whole body.
    Body(Vec<u8>),
}

/// What faseng must do with a hostile webhook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Refused at the door with this HTTP status; nothing is queued or posted.
    Refused(u16),
    /// Accepted (202), then reported as `error` with a description containing this text;
    /// no process runs.
    RunError(&'static str),
    /// A legal value that is only ever data: the deploy runs and the shell provider's
    /// environment variable `var` holds exactly `value`, never executed.
    Verbatim {
        /// `DEPLOY_REF`, `DEPLOY_TASK`, `DEPLOY_USER` or `DEPLOY_APP`.
        var: &'static str,
        /// The value the script must see.
        value: String,
    },
    /// A legal value that is only ever data: the deploy runs and succeeds.
    Runs,
}

/// A deployment webhook shape for faseng and what must happen to it.
#[derive(Debug, Clone)]
pub struct WebhookCase {
    /// Shown when the case fails.
    pub name: &'static str,
    /// Its kind of hostility.
    pub category: Category,
    /// How the correct body is changed.
    pub edit: Edit,
    /// What faseng must do.
    pub verdict: Verdict,
}

/// Who deploys a webhook case: the creator of the fake's deployments (the cases come from
/// outside chat, without a desk ticket; `payload.notify` names nobody who deploys).
pub const CREATOR: &str = "chima-bot";

/// One mebibyte of `a`.
pub fn megabyte() -> String {
    "a".repeat(1 << 20)
}

/// `depth` opening brackets: JSON nested far past any parser's recursion limit.
pub fn nested_arrays(depth: usize) -> String {
    "[".repeat(depth)
}

/// Every hostile chat message; injections target `canary` (an absolute path without `.`
/// components or whitespace).
pub fn chat_cases(canary: &str) -> Vec<ChatCase> {
    use Category::*;
    let touch = format!("touch${{IFS}}{canary}");
    let case = |name, category, text: String, says| ChatCase {
        name,
        category,
        text,
        says,
    };
    vec![
        case(
            "ref with ;",
            ShellMetacharacters,
            format!("chima deploy trelhub/main;{touch} to pandawork"),
            "shell metacharacter ';'",
        ),
        case(
            "ref with $()",
            ShellMetacharacters,
            format!("chima deploy trelhub/$({touch})"),
            "shell metacharacter '$'",
        ),
        case(
            "ref with backticks",
            ShellMetacharacters,
            format!("chima deploy trelhub/`{touch}`"),
            "shell metacharacter backtick",
        ),
        case(
            "ref with |",
            ShellMetacharacters,
            format!("chima deploy trelhub/main|{touch}"),
            "shell metacharacter '|'",
        ),
        case(
            "ref with &&",
            ShellMetacharacters,
            format!("chima deploy trelhub/main&&{touch}"),
            "shell metacharacter '&'",
        ),
        case(
            "forced deploy, ref with ;",
            ShellMetacharacters,
            format!("chima deploy! trelhub/main;{touch}"),
            "shell metacharacter ';'",
        ),
        case(
            "ci of a ref with $()",
            ShellMetacharacters,
            format!("chima ci trelhub/$({touch})"),
            "shell metacharacter '$'",
        ),
        case(
            "deploys of a ref with >",
            ShellMetacharacters,
            format!("chima deploys trelhub/main>{canary}"),
            "shell metacharacter '>'",
        ),
        case(
            "hosts with $()",
            ShellMetacharacters,
            format!("chima deploy trelhub to pandawork/$({touch})"),
            "is not a host list",
        ),
        case(
            "newline splits the environment off",
            ShellMetacharacters,
            format!("chima deploy trelhub/main to\npandawork;touch {canary}"),
            "needs an environment",
        ),
        case(
            "carriage return",
            ShellMetacharacters,
            format!("chima deploy trelhub/main\rtouch {canary}"),
            "didn't expect",
        ),
        case(
            "command word $()",
            ShellMetacharacters,
            format!("chima $({touch})"),
            "don't know the command",
        ),
        case(
            "help topic $()",
            ShellMetacharacters,
            format!("chima help $({touch})"),
            "There is no command",
        ),
        case(
            "ref --upload-pack",
            OptionInjection,
            format!("chima deploy trelhub/--upload-pack={touch}"),
            "starts with '-'",
        ),
        case(
            "ref -c core.sshCommand",
            OptionInjection,
            format!("chima deploy trelhub/-c core.sshCommand={touch}"),
            "starts with '-'",
        ),
        case(
            "app --upload-pack",
            OptionInjection,
            "chima deploy --upload-pack=x".into(),
            "is not an app name",
        ),
        case(
            "environment --upload-pack",
            OptionInjection,
            "chima deploy trelhub to --upload-pack=x".into(),
            "is not an environment name",
        ),
        case(
            "hosts --upload-pack",
            OptionInjection,
            "chima deploy trelhub to pandawork/--upload-pack=x".into(),
            "is not a host list",
        ),
        case(
            "task --upload-pack",
            OptionInjection,
            "chima deploy:--upload-pack trelhub".into(),
            "is not a task",
        ),
        case(
            "app ../../etc/passwd",
            PathTraversal,
            "chima deploy ../../etc/passwd".into(),
            "is not an app name",
        ),
        case(
            "ref ../../etc/passwd",
            PathTraversal,
            "chima deploy trelhub/../../etc/passwd".into(),
            "contains '..'",
        ),
        case(
            "environment ..",
            PathTraversal,
            "chima deploy trelhub to ..".into(),
            "is not an environment name",
        ),
        case(
            "environment absolute path",
            PathTraversal,
            "chima deploy trelhub to /etc/passwd".into(),
            "is not an environment name",
        ),
        case(
            "deploys of an absolute path",
            PathTraversal,
            "chima deploys /etc/passwd".into(),
            "is not an app name",
        ),
        case(
            "ci of an absolute ref",
            PathTraversal,
            "chima ci trelhub//etc/passwd".into(),
            "empty path component",
        ),
        case(
            "app with Cyrillic е",
            UnicodeConfusables,
            "chima deploy tr\u{435}lhub".into(),
            "is not an app name",
        ),
        case(
            "app in fullwidth letters",
            UnicodeConfusables,
            "chima deploy \u{ff54}\u{ff52}\u{ff45}\u{ff4c}\u{ff48}\u{ff55}\u{ff42}".into(),
            "is not an app name",
        ),
        case(
            "app with RTL override",
            UnicodeConfusables,
            "chima deploy trelhub\u{202e}".into(),
            "is not an app name",
        ),
        case(
            "app with zero-width joiner",
            UnicodeConfusables,
            "chima deploy trel\u{200d}hub".into(),
            "is not an app name",
        ),
        case(
            "environment with Cyrillic а",
            UnicodeConfusables,
            "chima deploy trelhub to pand\u{430}work".into(),
            "is not an environment name",
        ),
        case(
            "environment with BOM",
            UnicodeConfusables,
            "chima deploy trelhub to pandawork\u{feff}".into(),
            "is not an environment name",
        ),
        case(
            "ref with RTL override",
            UnicodeConfusables,
            "chima deploy trelhub/main\u{202e}".into(),
            "invisible or text-direction",
        ),
        case(
            "ref with zero-width space",
            UnicodeConfusables,
            "chima deploy trelhub/ma\u{200b}in".into(),
            "invisible or text-direction",
        ),
        case(
            "ref with NUL",
            ControlCharacters,
            "chima deploy trelhub/main\u{0}".into(),
            "control character",
        ),
        case(
            "ref with ANSI escape",
            ControlCharacters,
            "chima deploy trelhub/\u{1b}[31mred".into(),
            "control character",
        ),
        case(
            "app with BEL",
            ControlCharacters,
            "chima deploy tr\u{7}elhub".into(),
            "is not an app name",
        ),
        case(
            "environment with NUL",
            ControlCharacters,
            "chima deploy trelhub to pandawork\u{0}".into(),
            "is not an environment name",
        ),
        case(
            "app with DEL",
            ControlCharacters,
            "chima deploy trelhub\u{7f}".into(),
            "is not an app name",
        ),
        case(
            "1 MB ref",
            Huge,
            format!("chima deploy trelhub/{}", megabyte()),
            "bytes long",
        ),
        case(
            "1 MB command word",
            Huge,
            format!("chima {}", megabyte()),
            "bytes long",
        ),
        case(
            "1 MB of deploy lines",
            Huge,
            "chima deploy trelhub to pandawork\n".repeat((1 << 20) / 34),
            "Nothing was done",
        ),
        case(
            "300-byte ref",
            Huge,
            format!("chima deploy trelhub/{}", "a".repeat(300)),
            "longer than 255 bytes",
        ),
        case(
            "200-byte app",
            Huge,
            format!("chima deploy {}", "a".repeat(200)),
            "longer than 100 bytes",
        ),
        case(
            "deployment number past u64",
            WrongTypes,
            "chima log 99999999999999999999999".into(),
            "is not a deployment number",
        ),
        case(
            "trailing junk after the environment",
            WrongTypes,
            format!("chima deploy trelhub to pandawork {touch}"),
            "didn't expect",
        ),
        case(
            "ref with <script>",
            Markup,
            "chima deploy trelhub/<script>alert(1)</script>".into(),
            "shell metacharacter '<'",
        ),
    ]
}

/// Every hostile webhook shape; injections target `canary` (an absolute path without `.`
/// components or whitespace). The correct body deploys `main` of the harness repository to
/// `edge` with the shell provider.
pub fn webhook_cases(canary: &str) -> Vec<WebhookCase> {
    use Category::*;
    use Edit::*;
    use Verdict::*;
    let touch = format!("touch {canary}");
    let ifs = format!("touch${{IFS}}{canary}");
    let invalid = "is not valid";
    let unlisted = "has no environment";
    let case = |name, category, edit, verdict| WebhookCase {
        name,
        category,
        edit,
        verdict,
    };
    let verbatim = |var, value: &str| Verbatim {
        var,
        value: value.to_owned(),
    };
    let bytes = |s: &str| s.as_bytes().to_vec();
    vec![
        // The ref reaches a process only as one argv element or environment value: shell
        // syntax that git allows arrives verbatim and is never executed.
        case(
            "ref with ; and a space",
            ShellMetacharacters,
            Set("/deployment/ref", json!(format!("main;{touch}"))),
            RunError(invalid),
        ),
        case(
            "ref with $()",
            ShellMetacharacters,
            Set("/deployment/ref", json!(format!("$({ifs})"))),
            verbatim("DEPLOY_REF", &format!("$({ifs})")),
        ),
        case(
            "ref with backticks",
            ShellMetacharacters,
            Set("/deployment/ref", json!(format!("`{ifs}`"))),
            verbatim("DEPLOY_REF", &format!("`{ifs}`")),
        ),
        case(
            "ref with |",
            ShellMetacharacters,
            Set("/deployment/ref", json!(format!("main|{ifs}"))),
            verbatim("DEPLOY_REF", &format!("main|{ifs}")),
        ),
        case(
            "ref with &&",
            ShellMetacharacters,
            Set("/deployment/ref", json!(format!("main&&{ifs}"))),
            verbatim("DEPLOY_REF", &format!("main&&{ifs}")),
        ),
        case(
            "ref with a newline",
            ShellMetacharacters,
            Set("/deployment/ref", json!(format!("main\n{touch}"))),
            RunError(invalid),
        ),
        case(
            "task with ; and $()",
            ShellMetacharacters,
            Set("/deployment/task", json!(format!("deploy;$({touch})"))),
            verbatim("DEPLOY_TASK", &format!("deploy;$({touch})")),
        ),
        case(
            "creator with $()",
            ShellMetacharacters,
            Set("/deployment/creator/login", json!(format!("$({touch})"))),
            Runs,
        ),
        case(
            "description with `` and $()",
            ShellMetacharacters,
            Set(
                "/deployment/description",
                json!(format!("`{touch}` $({touch})")),
            ),
            Runs,
        ),
        case(
            "environment with ;",
            ShellMetacharacters,
            Set("/deployment/environment", json!(format!("edge;{touch}"))),
            RunError(unlisted),
        ),
        case(
            "hosts with $()",
            ShellMetacharacters,
            Set("/deployment/payload/hosts", json!(format!("$({touch})"))),
            Runs,
        ),
        case(
            "deploy_script with $()",
            ShellMetacharacters,
            Set(
                "/deployment/payload/config/deploy_script",
                json!(format!("$({touch})")),
            ),
            Runs,
        ),
        case(
            "before_deploy with ;",
            ShellMetacharacters,
            Set(
                "/deployment/payload/config/before_deploy",
                json!([format!("x;{touch}")]),
            ),
            Runs,
        ),
        case(
            "ref --upload-pack",
            OptionInjection,
            Set("/deployment/ref", json!(format!("--upload-pack={touch}"))),
            RunError(invalid),
        ),
        case(
            "ref -c core.sshCommand",
            OptionInjection,
            Set(
                "/deployment/ref",
                json!(format!("-c core.sshCommand={touch}")),
            ),
            RunError(invalid),
        ),
        case(
            "sha --upload-pack",
            OptionInjection,
            Set("/deployment/sha", json!(format!("--upload-pack={touch}"))),
            RunError(invalid),
        ),
        case(
            "sha $()",
            OptionInjection,
            Set("/deployment/sha", json!(format!("$({touch})"))),
            RunError(invalid),
        ),
        case(
            "environment --upload-pack",
            OptionInjection,
            Set("/deployment/environment", json!("--upload-pack=x")),
            RunError(unlisted),
        ),
        case(
            "clone_url --upload-pack",
            OptionInjection,
            Set(
                "/repository/clone_url",
                json!(format!("--upload-pack={touch}")),
            ),
            RunError("clone URL"),
        ),
        case(
            "clone_url ext:: helper",
            OptionInjection,
            Set(
                "/repository/clone_url",
                json!(format!("ext::sh -c touch% {canary}")),
            ),
            RunError("clone URL"),
        ),
        case(
            "config clone_url ext:: helper",
            OptionInjection,
            Set(
                "/deployment/payload/config/clone_url",
                json!(format!("ext::sh -c touch% {canary}")),
            ),
            Runs,
        ),
        case(
            "deploy_script -c",
            OptionInjection,
            Set(
                "/deployment/payload/config/deploy_script",
                json!(format!("-c {touch}")),
            ),
            Runs,
        ),
        case(
            "provider with ;",
            OptionInjection,
            Set(
                "/deployment/payload/config/provider",
                json!(format!("shell;{touch}")),
            ),
            Runs,
        ),
        case(
            "environment ../../etc/passwd",
            PathTraversal,
            Set("/deployment/environment", json!("../../etc/passwd")),
            RunError(unlisted),
        ),
        case(
            "environment ..",
            PathTraversal,
            Set("/deployment/environment", json!("..")),
            RunError(unlisted),
        ),
        case(
            "environment absolute path",
            PathTraversal,
            Set("/deployment/environment", json!("/etc")),
            RunError(unlisted),
        ),
        case(
            "app name ../../etc/passwd",
            PathTraversal,
            Set("/deployment/payload/name", json!("../../etc/passwd")),
            verbatim("DEPLOY_APP", "trelhub"),
        ),
        case(
            "repository ../../etc/passwd",
            PathTraversal,
            Set("/repository/full_name", json!("../../etc/passwd")),
            Refused(422),
        ),
        case(
            "repository oursky/..",
            PathTraversal,
            Set("/repository/full_name", json!("oursky/..")),
            Refused(422),
        ),
        case(
            "deploy_script absolute",
            PathTraversal,
            Set(
                "/deployment/payload/config/deploy_script",
                json!("/usr/bin/touch"),
            ),
            Runs,
        ),
        case(
            "deploy_script ../..",
            PathTraversal,
            Set(
                "/deployment/payload/config/deploy_script",
                json!("../../../../usr/bin/touch"),
            ),
            Runs,
        ),
        case(
            "clone_url ../../",
            PathTraversal,
            Set("/repository/clone_url", json!("../../etc")),
            RunError("clone URL"),
        ),
        case(
            "environment with Cyrillic е",
            UnicodeConfusables,
            Set("/deployment/environment", json!("\u{435}dge")),
            RunError(unlisted),
        ),
        case(
            "environment in fullwidth letters",
            UnicodeConfusables,
            Set(
                "/deployment/environment",
                json!("\u{ff45}\u{ff44}\u{ff47}\u{ff45}"),
            ),
            RunError(unlisted),
        ),
        case(
            "ref with RTL override",
            UnicodeConfusables,
            Set("/deployment/ref", json!("main\u{202e}")),
            RunError(invalid),
        ),
        case(
            "ref with zero-width joiner",
            UnicodeConfusables,
            Set("/deployment/ref", json!("ma\u{200d}in")),
            RunError(invalid),
        ),
        case(
            "app name with Cyrillic е",
            UnicodeConfusables,
            Set("/deployment/payload/name", json!("tr\u{435}lhub")),
            verbatim("DEPLOY_APP", "trelhub"),
        ),
        case(
            "ref with NUL",
            ControlCharacters,
            Set("/deployment/ref", json!("main\u{0}")),
            RunError(invalid),
        ),
        case(
            "environment with BEL",
            ControlCharacters,
            Set("/deployment/environment", json!("edge\u{7}")),
            RunError(unlisted),
        ),
        case(
            "task with NUL",
            ControlCharacters,
            Set("/deployment/task", json!("deploy\u{0}x")),
            Refused(400),
        ),
        case(
            "creator with NUL and newline",
            ControlCharacters,
            Set(
                "/deployment/creator/login",
                json!(format!("joyz\u{0}\n{touch}")),
            ),
            verbatim("DEPLOY_USER", &format!("joyz\u{fffd}\u{fffd}{touch}")),
        ),
        case(
            "payload user name with NUL and newline",
            ControlCharacters,
            Set(
                "/deployment/payload/notify/user_name",
                json!(format!("joyz\u{0}\n{touch}")),
            ),
            verbatim("DEPLOY_USER", CREATOR),
        ),
        case(
            "description with NUL and ANSI",
            ControlCharacters,
            Set("/deployment/description", json!("a\u{0}\u{1b}[2Jb")),
            Runs,
        ),
        case(
            "1 MB ref",
            Huge,
            Set("/deployment/ref", json!(megabyte())),
            RunError("longer than 255 bytes"),
        ),
        case(
            "1 MB environment",
            Huge,
            Set("/deployment/environment", json!(megabyte())),
            RunError(unlisted),
        ),
        case(
            "1 MB task",
            Huge,
            Set("/deployment/task", json!(megabyte())),
            Refused(400),
        ),
        case(
            "1 MB creator",
            Huge,
            Set("/deployment/creator/login", json!(megabyte())),
            verbatim("DEPLOY_USER", &"a".repeat(100)),
        ),
        case(
            "1 MB payload user name",
            Huge,
            Set("/deployment/payload/notify/user_name", json!(megabyte())),
            verbatim("DEPLOY_USER", CREATOR),
        ),
        case(
            "1 MB description",
            Huge,
            Set("/deployment/description", json!(megabyte())),
            Runs,
        ),
        case(
            "1 MB extra payload key",
            Huge,
            Set("/deployment/payload/junk", json!(megabyte())),
            Runs,
        ),
        case(
            "body over 25 MB",
            Huge,
            Body(vec![b' '; 25 * 1024 * 1024 + 1]),
            Refused(413),
        ),
        case(
            "body of 100k [",
            DeepNesting,
            Body(nested_arrays(100_000).into_bytes()),
            Refused(400),
        ),
        case(
            "body of 100k {\"a\":",
            DeepNesting,
            Body("{\"a\":".repeat(100_000).into_bytes()),
            Refused(400),
        ),
        case(
            "payload of 100k [",
            DeepNesting,
            Splice {
                find: "\"payload\":",
                with: format!("\"payload\":{}", nested_arrays(100_000)).into_bytes(),
            },
            Refused(400),
        ),
        case(
            "payload string of 100k [",
            DeepNesting,
            Set("/deployment/payload", json!(nested_arrays(100_000))),
            Runs,
        ),
        case(
            "id as a string",
            WrongTypes,
            Set("/deployment/id", json!("1")),
            Refused(400),
        ),
        case(
            "id negative",
            WrongTypes,
            Set("/deployment/id", json!(-1)),
            Refused(400),
        ),
        case(
            "id fractional",
            WrongTypes,
            Set("/deployment/id", json!(1.5)),
            Refused(400),
        ),
        case(
            "id past u64",
            WrongTypes,
            SetRaw("/deployment/id", bytes("18446744073709551616")),
            Refused(400),
        ),
        case(
            "ref a number",
            WrongTypes,
            Set("/deployment/ref", json!(42)),
            Refused(400),
        ),
        case(
            "ref null",
            WrongTypes,
            Set("/deployment/ref", Value::Null),
            Refused(400),
        ),
        case(
            "environment an array",
            WrongTypes,
            Set("/deployment/environment", json!(["edge"])),
            Refused(400),
        ),
        case(
            "task null",
            WrongTypes,
            Set("/deployment/task", Value::Null),
            Refused(400),
        ),
        case(
            "deployment an array",
            WrongTypes,
            Set("/deployment", json!([])),
            Refused(400),
        ),
        case(
            "deployment null",
            WrongTypes,
            Set("/deployment", Value::Null),
            Refused(400),
        ),
        case(
            "repository a string",
            WrongTypes,
            Set("/repository", json!("oursky/trelhub")),
            Refused(400),
        ),
        case(
            "repository name a number",
            WrongTypes,
            Set("/repository/full_name", json!(7)),
            Refused(400),
        ),
        case(
            "creator a string",
            WrongTypes,
            Set("/deployment/creator", json!("joyz")),
            Refused(400),
        ),
        case("body null", WrongTypes, Body(bytes("null")), Refused(400)),
        case("body an array", WrongTypes, Body(bytes("[]")), Refused(400)),
        case(
            "body a string",
            WrongTypes,
            Body(bytes("\"deployment\"")),
            Refused(400),
        ),
        case(
            "payload a number",
            WrongTypes,
            Set("/deployment/payload", json!(42)),
            Runs,
        ),
        case(
            "payload a non-JSON string",
            WrongTypes,
            Set("/deployment/payload", json!("not json")),
            Runs,
        ),
        case(
            "config an array",
            WrongTypes,
            Set("/deployment/payload/config", json!([])),
            Runs,
        ),
        case(
            "config environments a string",
            WrongTypes,
            Set("/deployment/payload/config/environments", json!("edge")),
            Runs,
        ),
        case(
            "config timeout negative",
            WrongTypes,
            Set("/deployment/payload/config/timeout", json!(-1)),
            Runs,
        ),
        case(
            "notify a string",
            WrongTypes,
            Set("/deployment/payload/notify", json!("C024BE91L")),
            Runs,
        ),
        case(
            "no ref",
            MissingFields,
            Remove("/deployment/ref"),
            Refused(400),
        ),
        case(
            "no sha",
            MissingFields,
            Remove("/deployment/sha"),
            Refused(400),
        ),
        case(
            "no environment",
            MissingFields,
            Remove("/deployment/environment"),
            Refused(400),
        ),
        case(
            "no id",
            MissingFields,
            Remove("/deployment/id"),
            Refused(400),
        ),
        case(
            "no repository",
            MissingFields,
            Remove("/repository"),
            Refused(400),
        ),
        case(
            "no payload",
            MissingFields,
            Remove("/deployment/payload"),
            Runs,
        ),
        case(
            "no clone_url",
            MissingFields,
            Remove("/repository/clone_url"),
            RunError("no clone_url"),
        ),
        case("empty body", MissingFields, Body(Vec::new()), Refused(400)),
        case(
            "ref twice",
            DuplicateKeys,
            Splice {
                find: "\"ref\":\"main\"",
                with: format!("\"ref\":\"main\",\"ref\":\"--upload-pack={touch}\"").into_bytes(),
            },
            Refused(400),
        ),
        case(
            "environment twice",
            DuplicateKeys,
            Splice {
                find: "\"environment\":\"edge\"",
                with: bytes("\"environment\":\"edge\",\"environment\":\"../../etc\""),
            },
            Refused(400),
        ),
        case(
            "deployment twice",
            DuplicateKeys,
            Splice {
                find: "\"deployment\":",
                with: bytes("\"deployment\":{},\"deployment\":"),
            },
            Refused(400),
        ),
        case(
            "raw 0xff body",
            InvalidUtf8,
            Body(vec![0xff, 0xfe, b'{', b'}']),
            Refused(400),
        ),
        case(
            "raw 0xff in the ref",
            InvalidUtf8,
            Splice {
                find: "\"ref\":\"main\"",
                with: b"\"ref\":\"ma\xffin\"".to_vec(),
            },
            Refused(400),
        ),
        case(
            "overlong '/' in the environment",
            InvalidUtf8,
            Splice {
                find: "\"environment\":\"edge\"",
                with: b"\"environment\":\"..\xc0\xaf..\"".to_vec(),
            },
            Refused(400),
        ),
        case(
            "lone surrogate in the ref",
            InvalidUtf8,
            Splice {
                find: "\"ref\":\"main\"",
                with: bytes("\"ref\":\"\\ud800\""),
            },
            Refused(400),
        ),
        case(
            "ref <script>",
            Markup,
            Set("/deployment/ref", json!("<script>alert(1)</script>")),
            verbatim("DEPLOY_REF", "<script>alert(1)</script>"),
        ),
        case(
            "description <img onerror>",
            Markup,
            Set(
                "/deployment/description",
                json!("<img src=x onerror=alert(1)>"),
            ),
            Runs,
        ),
        case(
            "ref <!channel>",
            Markup,
            Set("/deployment/ref", json!("<!channel>")),
            verbatim("DEPLOY_REF", "<!channel>"),
        ),
        case(
            "creator <https://x|y> <@U123>",
            Markup,
            Set(
                "/deployment/creator/login",
                json!("<https://x|y> <@U123> &amp;"),
            ),
            verbatim("DEPLOY_USER", "<https://x|y> <@U123> &amp;"),
        ),
    ]
}
