//! Property tests for the grammar: no line makes it panic, every line it refuses gets a
//! non-empty answer, and every command it can express parses back to itself.

use chima::grammar::{self, Addressing, Command, DeployCommand, Task};
use chima::messages;
use deploy_core::{AppName, EnvName, GitRef};
use proptest::prelude::*;

fn name() -> impl Strategy<Value = String> {
    "[a-z0-9][-_.a-z0-9]{0,20}"
}

fn git_ref() -> impl Strategy<Value = String> {
    "[A-Za-z0-9_][A-Za-z0-9_-]{0,10}(/[A-Za-z0-9_][A-Za-z0-9_-]{0,10}){0,3}"
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3_000))]

    #[test]
    fn no_line_panics_and_every_refusal_is_answered(line in "\\PC{0,200}|(deploy|deploys|ci|where|help|lock|unlock!?|locks|cancel|queue|freeze|unfreeze|freezes|audit|rollback|stats)[!:a-z ]{0,5} \\PC{0,60}") {
        match grammar::parse(&line) {
            Ok(_) => {}
            Err(e) => prop_assert!(!messages::not_understood(&e, "chima").text().is_empty()),
        }
    }

    #[test]
    fn addressing_never_panics(text in "\\PC{0,300}", implicit in any::<bool>()) {
        let a = Addressing { bot_name: "chima", implicit };
        for line in grammar::addressed_lines(&text, &a) {
            let _ = grammar::parse(&line);
        }
    }

    #[test]
    fn deploy_commands_round_trip(
        app in name(),
        r in proptest::option::of(git_ref()),
        env in proptest::option::of(name()),
        force in any::<bool>(),
        when_free in any::<bool>(),
        task in proptest::option::of("[a-z_]{1,8}"),
        keyword in prop_oneof![Just("to"), Just("in"), Just("on")],
    ) {
        let mut line = String::from("deploy");
        if force { line.push('!'); }
        if let Some(t) = &task { line.push(':'); line.push_str(t); }
        line.push(' ');
        line.push_str(&app);
        if let Some(r) = &r { line.push('/'); line.push_str(r); }
        if let Some(e) = &env { line.push_str(&format!(" {keyword} {e}")); }
        if when_free { line.push_str(" when free"); }
        let expected = DeployCommand {
            task: Task::parse_command(&task.as_ref().map_or("deploy".to_owned(), |t| format!("deploy:{t}"))).unwrap(),
            force,
            app: AppName::parse(&app).unwrap(),
            git_ref: r.as_deref().map(|r| GitRef::parse(r).unwrap()),
            env: env.as_deref().map(|e| EnvName::parse_with_aliases(e).unwrap()),
            hosts: None,
            otp: None,
            when_free,
        };
        prop_assert_eq!(grammar::parse(&line), Ok(Command::Deploy(expected)));
    }
}
