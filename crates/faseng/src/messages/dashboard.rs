//! What the dashboard says when it cannot do or show something (page labels live with the
//! pages). Plain text: the pages escape it.

/// The store did not answer (the error itself goes to the log, not the page).
pub fn store_unavailable() -> &'static str {
    "The store did not answer; try again in a moment."
}

/// `/apps/{app}` of an app app.json does not list.
pub fn no_such_app(app: &str) -> String {
    format!("There is no app named {app} in faseng's app.json.")
}

/// An environment the app does not list.
pub fn no_such_environment(app: &str, env: &str) -> String {
    format!("{app} has no environment named {env}.")
}

/// A deployment page of a deployment faseng does not know.
pub fn no_such_deployment() -> &'static str {
    "There is no such deployment (it may have been removed by retention)."
}

/// An action that does not exist or is someone else's.
pub fn no_such_action() -> &'static str {
    "There is no such action of yours."
}

/// A form field that is not what it must be.
pub fn bad_field(field: &str, why: &str) -> String {
    format!("The {field} is not valid: {why}. Nothing was done.")
}

/// A history filter that is not what it must be.
pub fn bad_filter(field: &str, value: &str) -> String {
    format!("The filter {field}={value:?} is not valid.")
}

/// A statistics period that is not offered.
pub fn bad_period(value: &str) -> String {
    format!("{value:?} is not a period the statistics offer: choose 7d, 30d or 90d.")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn texts() {
        assert_eq!(
            store_unavailable(),
            "The store did not answer; try again in a moment."
        );
        assert_eq!(
            no_such_app("demo"),
            "There is no app named demo in faseng's app.json."
        );
        assert_eq!(
            no_such_environment("demo", "moon"),
            "demo has no environment named moon."
        );
        assert_eq!(
            no_such_deployment(),
            "There is no such deployment (it may have been removed by retention)."
        );
        assert_eq!(no_such_action(), "There is no such action of yours.");
        assert_eq!(
            bad_field("environment", "must be lower case"),
            "The environment is not valid: must be lower case. Nothing was done."
        );
        assert_eq!(
            bad_filter("state", "maybe"),
            "The filter state=\"maybe\" is not valid."
        );
        assert_eq!(
            bad_period("2y"),
            "\"2y\" is not a period the statistics offer: choose 7d, 30d or 90d."
        );
    }
}
