//! Reading one object of an app's entry field by field, every problem recorded with the app
//! and the field's full path named.

use chrono_tz::Tz;
use serde_json::{Map, Value};

use crate::desk::FreezeWindow;
use crate::duration::Span;
use crate::names::{EnvName, ScriptPath};

use super::ConfigProblem;

/// Reads one object of an app's entry (the entry itself, or one nested in it at `path`),
/// recording every problem with the app and the field's full path named.
pub(crate) struct Checker<'a> {
    pub(crate) app: &'a str,
    /// Where `entry` is in the app's entry (`protect.production`; empty for the entry).
    pub(crate) path: String,
    /// The object read.
    pub(crate) entry: &'a Map<String, Value>,
    pub(crate) problems: &'a mut Vec<ConfigProblem>,
}

impl Checker<'_> {
    /// The full path of `field` (empty: the object itself).
    pub(crate) fn field_path(&self, field: &str) -> String {
        match (self.path.is_empty(), field.is_empty()) {
            (true, _) => field.to_owned(),
            (false, true) => self.path.clone(),
            (false, false) => format!("{}.{field}", self.path),
        }
    }

    /// Records a problem with `field` (empty: with the object itself).
    pub(crate) fn problem(&mut self, field: &str, message: impl Into<String>) {
        let path = self.field_path(field);
        self.problems.push(ConfigProblem {
            app: Some(self.app.to_owned()),
            field: (!path.is_empty()).then_some(path),
            message: message.into(),
        });
    }

    /// True when a problem with `field` has been recorded.
    pub(crate) fn has_problem(&self, field: &str) -> bool {
        let path = self.field_path(field);
        self.problems
            .iter()
            .any(|p| p.app.as_deref() == Some(self.app) && p.field.as_deref() == Some(&path))
    }

    /// A checker of the object `entry` found at `field` of this one.
    pub(crate) fn nested<'b>(
        &'b mut self,
        field: &str,
        entry: &'b Map<String, Value>,
    ) -> Checker<'b> {
        Checker {
            app: self.app,
            path: self.field_path(field),
            entry,
            problems: self.problems,
        }
    }

    pub(crate) fn string(&mut self, field: &str) -> Option<String> {
        match self.entry.get(field) {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) if !s.trim().is_empty() => Some(s.clone()),
            Some(_) => {
                self.problem(field, "must be a non-empty string");
                None
            }
        }
    }

    pub(crate) fn string_list(&mut self, field: &str) -> Option<Vec<String>> {
        match self.entry.get(field) {
            None | Some(Value::Null) => None,
            Some(Value::Array(items)) if items.iter().all(Value::is_string) => Some(
                items
                    .iter()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect(),
            ),
            Some(_) => {
                self.problem(field, "must be a list of strings");
                None
            }
        }
    }

    /// A duration field: more than 0 and at most `max`, else `default`.
    pub(crate) fn span(&mut self, field: &str, default: Span, max: Option<Span>) -> Span {
        let text = match self.entry.get(field) {
            None | Some(Value::Null) => return default,
            Some(Value::String(s)) => s,
            Some(_) => {
                self.problem(
                    field,
                    "must be a duration such as \"30m\", \"4h\" or \"1d\"",
                );
                return default;
            }
        };
        match text.parse::<Span>() {
            Ok(span) if span.as_secs() == 0 => self.problem(field, "must be more than 0"),
            Ok(span) => match max {
                Some(max) if span > max => {
                    self.problem(field, format!("{text} is too long: at most {max}"))
                }
                _ => return span,
            },
            Err(e) => self.problem(field, e.to_string()),
        }
        default
    }

    pub(crate) fn bool(&mut self, field: &str, default: bool) -> bool {
        match self.entry.get(field) {
            None | Some(Value::Null) => default,
            Some(Value::Bool(b)) => *b,
            Some(_) => {
                self.problem(field, "must be true or false");
                default
            }
        }
    }

    pub(crate) fn freeze(&mut self, tz: Tz, environments: &[EnvName]) -> Vec<FreezeWindow> {
        let items = match self.entry.get("freeze") {
            None | Some(Value::Null) => return Vec::new(),
            Some(Value::Array(items)) => items,
            Some(_) => {
                self.problem("freeze", "must be a list of windows");
                return Vec::new();
            }
        };
        let mut windows = Vec::new();
        for (i, item) in items.iter().enumerate() {
            match FreezeWindow::from_value(item, tz, environments) {
                Ok(window) => windows.push(window),
                Err(problems) => {
                    for (key, message) in problems {
                        let field = match key {
                            "" => format!("freeze[{i}]"),
                            key => format!("freeze[{i}].{key}"),
                        };
                        self.problem(&field, message);
                    }
                }
            }
        }
        windows
    }

    pub(crate) fn script_list(&mut self, field: &str) -> Vec<ScriptPath> {
        let mut scripts = Vec::new();
        for s in self.string_list(field).unwrap_or_default() {
            match ScriptPath::parse(&s) {
                Ok(p) => scripts.push(p),
                Err(e) => self.problem(field, e.to_string()),
            }
        }
        scripts
    }
}
