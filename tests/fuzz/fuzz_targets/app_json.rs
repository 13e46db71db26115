//! app.json parsing of arbitrary bytes: never panics; a loaded file is complete and keeps no
//! secret in any payload; a refused one names at least one problem.
#![no_main]

use deploy_core::Apps;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match Apps::from_json(text) {
        Ok(apps) => {
            for app in apps.iter() {
                assert!(!app.environments.is_empty());
                let config = app.payload_config();
                assert!(config.get("github_token").is_none());
                assert!(config.get("github_api").is_none());
                let _ = app.environment_url(&app.default_environment);
                let _ = app.heroku_app(&app.default_environment);
                let _ = app.allows_room("C1", "#deployment");
            }
        }
        Err(e) => {
            assert!(!e.problems.is_empty());
            assert!(!e.to_string().is_empty());
        }
    }
});
