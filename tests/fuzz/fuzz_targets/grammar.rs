//! chima's command grammar on arbitrary UTF-8: addressing and parsing never panic, every
//! refusal has a non-empty answer, and every accepted deploy is made of safe parts.
#![no_main]

use chima::grammar::{self, Addressing, Command};
use chima::messages;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    for implicit in [false, true] {
        let addressing = Addressing {
            bot_name: "chima",
            implicit,
        };
        for line in grammar::addressed_lines(text, &addressing) {
            check(&line);
        }
    }
    check(text);
});

fn check(line: &str) {
    match grammar::parse(line) {
        Ok(Command::Deploy(d)) => {
            if let Some(r) = &d.git_ref {
                assert!(r.shell_metacharacter().is_none(), "{r}");
                assert!(!r.as_str().starts_with('-'), "{r}");
            }
            assert!(!d.task.as_str().contains(":-"), "{}", d.task.as_str());
            if let Some(h) = &d.hosts {
                assert!(!h.starts_with('-'), "{h}");
            }
        }
        Ok(_) => {}
        Err(e) => {
            let reply = messages::not_understood(&e, "chima");
            assert!(!reply.text().trim().is_empty());
            assert!(
                !reply
                    .text
                    .chars()
                    .any(|c| (c.is_control() && c != '\n') || deploy_core::is_invisible(c)),
                "{:?}",
                reply.text
            );
        }
    }
}
