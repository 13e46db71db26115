//! The upstream protocol samples in `../shared/fixtures`, and schema checks against them.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};

use serde_json::Value;

/// The fixtures directory (`<repo>/../shared/fixtures`).
pub fn dir() -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../shared/fixtures"
    ))
}

/// Reads a fixture as text, e.g. `github/webhooks/deployment/payload.json`.
pub fn text(relative: &str) -> String {
    let path = dir().join(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("fixture {}: {e}", path.display()))
}

/// Reads a fixture as JSON.
pub fn json(relative: &str) -> Value {
    serde_json::from_str(&text(relative)).unwrap_or_else(|e| panic!("fixture {relative}: {e}"))
}

/// GitHub's REST OpenAPI description (subset), parsed once.
pub fn github_openapi() -> &'static Value {
    static DOC: OnceLock<Value> = OnceLock::new();
    DOC.get_or_init(|| json("github/openapi-subset.json"))
}

/// Slack's Web API OpenAPI (swagger 2) description (subset), parsed once.
pub fn slack_web_api() -> &'static Value {
    static DOC: OnceLock<Value> = OnceLock::new();
    DOC.get_or_init(|| json("slack/web-api/slack_web_openapi_v2.subset.json"))
}

/// Replaces every local `$ref` (`#/components/...`) with its target, so a sub-schema can be
/// validated on its own. Recursion stops at `depth` (GitHub's schemas are not cyclic).
pub fn inline_refs(doc: &Value, schema: &Value, depth: usize) -> Value {
    assert!(depth < 64, "schema $ref nesting too deep");
    match schema {
        Value::Object(map) => {
            if let Some(Value::String(pointer)) = map.get("$ref") {
                let target = pointer
                    .strip_prefix('#')
                    .and_then(|p| doc.pointer(p))
                    .unwrap_or_else(|| panic!("unresolved $ref {pointer}"));
                return inline_refs(doc, target, depth + 1);
            }
            Value::Object(
                map.iter()
                    .map(|(k, v)| (k.clone(), inline_refs(doc, v, depth + 1)))
                    .collect(),
            )
        }
        Value::Array(items) => Value::Array(
            items
                .iter()
                .map(|v| inline_refs(doc, v, depth + 1))
                .collect(),
        ),
        other => other.clone(),
    }
}

/// OpenAPI 3.0's `nullable: true` means "or null"; JSON Schema needs that spelled out.
fn nullable_to_json_schema(schema: Value) -> Value {
    match schema {
        Value::Object(mut map) => {
            let nullable = map.remove("nullable") == Some(Value::Bool(true));
            for v in map.values_mut() {
                *v = nullable_to_json_schema(std::mem::take(v));
            }
            if nullable {
                serde_json::json!({"anyOf": [Value::Object(map), {"type": "null"}]})
            } else {
                Value::Object(map)
            }
        }
        Value::Array(items) => {
            Value::Array(items.into_iter().map(nullable_to_json_schema).collect())
        }
        other => other,
    }
}

fn github_operation(method: &str, path: &str) -> &'static Value {
    github_openapi()
        .pointer(&format!(
            "/paths/{}/{}",
            path.replace('~', "~0").replace('/', "~1"),
            method.to_ascii_lowercase()
        ))
        .unwrap_or_else(|| panic!("no operation {method} {path} in openapi-subset.json"))
}

fn check(schema: &Value, instance: &Value) -> Result<(), Vec<String>> {
    // Compiling a schema costs far more than validating with it; keep each one compiled.
    static COMPILED: OnceLock<Mutex<HashMap<String, Arc<jsonschema::Validator>>>> = OnceLock::new();
    let key = schema.to_string();
    let cached = COMPILED
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(&key)
        .cloned();
    let validator = cached.unwrap_or_else(|| {
        let compiled = nullable_to_json_schema(inline_refs(github_openapi(), schema, 0));
        let validator = Arc::new(jsonschema::validator_for(&compiled).expect("schema compiles"));
        COMPILED
            .get_or_init(Default::default)
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key, validator.clone());
        validator
    });
    let errors: Vec<String> = validator
        .iter_errors(instance)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

/// Validates `instance` against a definition of Slack's Web API description, e.g. `blocks`
/// (what `chat.postMessage` and `chat.update` take).
pub fn check_slack_definition(name: &str, instance: &Value) -> Result<(), Vec<String>> {
    let schema = slack_web_api()
        .pointer(&format!("/definitions/{name}"))
        .unwrap_or_else(|| panic!("no definition {name} in the Slack Web API description"));
    let compiled = inline_refs(slack_web_api(), schema, 0);
    let validator = jsonschema::validator_for(&compiled).expect("schema compiles");
    let errors: Vec<String> = validator
        .iter_errors(instance)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

/// Validates a request body against the operation's `requestBody` schema, e.g.
/// `("POST", "/repos/{owner}/{repo}/deployments")`.
pub fn check_github_request(method: &str, path: &str, body: &Value) -> Result<(), Vec<String>> {
    let schema = github_operation(method, path)
        .pointer("/requestBody/content/application~1json/schema")
        .unwrap_or_else(|| panic!("{method} {path} has no JSON request body"));
    check(schema, body)
}

/// Validates a response body against the operation's schema for `status`.
pub fn check_github_response(
    method: &str,
    path: &str,
    status: u16,
    body: &Value,
) -> Result<(), Vec<String>> {
    let responses = github_operation(method, path)
        .get("responses")
        .expect("operation has responses");
    let response = inline_refs(
        github_openapi(),
        responses
            .get(status.to_string())
            .unwrap_or_else(|| panic!("{method} {path} documents no {status} response")),
        0,
    );
    match response.pointer("/content/application~1json/schema") {
        Some(schema) => check(schema, body),
        None => Ok(()),
    }
}

/// Validates a value against a schema in `components/schemas`, e.g. `commit`, for answers
/// whose operation the subset lacks but whose schema it has.
pub fn check_github_schema(component: &str, instance: &Value) -> Result<(), Vec<String>> {
    let schema = github_openapi()
        .pointer(&format!("/components/schemas/{component}"))
        .unwrap_or_else(|| panic!("no schema {component} in openapi-subset.json"));
    check(schema, instance)
}

/// An example value from `components/examples`, e.g. `deployment-simple-example`.
pub fn github_example(name: &str) -> Value {
    github_openapi()
        .pointer(&format!("/components/examples/{name}/value"))
        .unwrap_or_else(|| panic!("no example {name}"))
        .clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documented_examples_pass_their_own_schemas() {
        check_github_response(
            "POST",
            "/repos/{owner}/{repo}/deployments",
            201,
            &github_example("deployment-simple-example"),
        )
        .unwrap();
        check_github_request(
            "POST",
            "/repos/{owner}/{repo}/deployments",
            &serde_json::json!({"ref": "topic-branch", "auto_merge": false,
                                "required_contexts": ["ci/janky"], "payload": {"a": 1}}),
        )
        .unwrap();
    }

    #[test]
    fn a_wrong_body_fails_validation() {
        let errors = check_github_request(
            "POST",
            "/repos/{owner}/{repo}/deployments",
            &serde_json::json!({"auto_merge": "yes"}),
        )
        .unwrap_err();
        assert_eq!(errors.len(), 2, "{errors:?}");
        let status_errors = check_github_request(
            "POST",
            "/repos/{owner}/{repo}/deployments/{deployment_id}/statuses",
            &serde_json::json!({"state": "exploded"}),
        )
        .unwrap_err();
        assert_eq!(status_errors.len(), 1);
    }
}
