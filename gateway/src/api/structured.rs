//! What a request says its output must be: OpenAI's `response_format`
//! (`json_object`, `json_schema`), vLLM's `guided_json`, `guided_regex`,
//! `guided_choice` and `guided_grammar` (Lark, as llguidance reads it), and
//! Starling's `x_post` (a valid social post). One of them per request; each
//! becomes an engine [`Constraint`] tagged with the field it came from, so a
//! schema the engine cannot compile is a 400 naming that field.

use inference::{Constraint, Grammar, PostRules};
use post_rules::Platform;
use serde::Deserialize;
use serde_json::Value;

use crate::error::ApiError;

/// `response_format`.
#[derive(Debug, Deserialize)]
pub struct ResponseFormat {
    /// `text`, `json_object` or `json_schema`.
    #[serde(rename = "type")]
    pub kind: String,
    /// With `json_schema`: the schema and its name.
    pub json_schema: Option<JsonSchemaFormat>,
}

/// `response_format.json_schema`.
#[derive(Debug, Deserialize)]
pub struct JsonSchemaFormat {
    /// The schema's name (OpenAI requires it; it does not change the output).
    pub name: Option<String>,
    /// The schema; absent: any JSON value.
    pub schema: Option<Value>,
    /// OpenAI's strict mode. Outputs here always follow the schema, so it
    /// changes nothing; accepted for compatibility.
    pub strict: Option<bool>,
}

/// `x_post`: the output is a valid post for a platform.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostSpec {
    /// `x` (default), `bluesky`, `mastodon`, `linkedin`.
    pub platform: Option<String>,
    /// The limit in the platform's unit (X: weighted characters); default:
    /// the platform's own (280 on X; premium accounts post longer).
    #[serde(alias = "max_length")]
    pub max_weighted_length: Option<usize>,
    /// Strings the post must contain (`#ad`).
    #[serde(default)]
    pub require: Vec<String>,
    /// Strings it must not contain (case-insensitive).
    #[serde(default)]
    pub forbid: Vec<String>,
    /// Most hashtags.
    pub max_hashtags: Option<usize>,
    /// Most URLs.
    pub max_urls: Option<usize>,
    /// Most mentions.
    pub max_mentions: Option<usize>,
}

impl PostSpec {
    /// The engine's rules, checked.
    pub fn rules(&self) -> Result<PostRules, ApiError> {
        let platform = match &self.platform {
            None => Platform::X,
            Some(p) => p.parse().map_err(|e| ApiError::invalid("x_post.platform", e))?,
        };
        let mut r = PostRules::new(platform);
        r.max_length = self.max_weighted_length;
        r.require = self.require.clone();
        r.forbid = self.forbid.clone();
        r.max_hashtags = self.max_hashtags;
        r.max_urls = self.max_urls;
        r.max_mentions = self.max_mentions;
        Ok(r)
    }
}

/// The output constraints a request may carry (flattened into the chat and
/// legacy completion bodies).
#[derive(Debug, Default, Deserialize)]
pub struct Structured {
    /// OpenAI's.
    pub response_format: Option<ResponseFormat>,
    /// vLLM's: a JSON schema (an object, or a string holding one).
    pub guided_json: Option<Value>,
    /// vLLM's: a regular expression the whole output matches.
    pub guided_regex: Option<String>,
    /// vLLM's: the output is exactly one of these.
    pub guided_choice: Option<Vec<String>>,
    /// vLLM's: a grammar (Lark syntax, as llguidance reads it).
    pub guided_grammar: Option<String>,
    /// Starling's: a valid post.
    pub x_post: Option<PostSpec>,
}

/// A constraint and the request field it came from.
#[derive(Clone, Debug)]
pub struct Tagged {
    /// For the engine.
    pub constraint: Constraint,
    /// Where it was written, to name in errors.
    pub field: String,
}

impl Structured {
    /// The one constraint the request sets, if any.
    pub fn constraint(&self) -> Result<Option<Tagged>, ApiError> {
        let mut found: Vec<Tagged> = Vec::new();
        let mut add = |field: &str, constraint: Constraint| found.push(Tagged { constraint, field: field.to_owned() });
        if let Some(f) = &self.response_format {
            match f.kind.as_str() {
                "text" => {}
                "json_object" => add("response_format", Constraint::Grammar(Grammar::JsonObject)),
                "json_schema" => {
                    let Some(js) = &f.json_schema else {
                        return Err(ApiError::invalid("response_format.json_schema", "`json_schema` is required with type `json_schema`"));
                    };
                    if js.name.as_ref().is_some_and(|n| n.is_empty() || n.len() > 64) {
                        return Err(ApiError::invalid("response_format.json_schema.name", "a name of 1 to 64 characters"));
                    }
                    let schema = js.schema.clone().unwrap_or(Value::Bool(true));
                    add("response_format.json_schema.schema", Constraint::Grammar(Grammar::JsonSchema(schema)));
                }
                other => {
                    return Err(ApiError::invalid(
                        "response_format.type",
                        format!("`{other}` is not one of text, json_object, json_schema"),
                    ))
                }
            }
        }
        if let Some(v) = &self.guided_json {
            let schema = match v {
                Value::String(s) => {
                    serde_json::from_str(s).map_err(|e| ApiError::invalid("guided_json", format!("not a JSON schema: {e}")))?
                }
                v => v.clone(),
            };
            add("guided_json", Constraint::Grammar(Grammar::JsonSchema(schema)));
        }
        if let Some(rx) = &self.guided_regex {
            add("guided_regex", Constraint::Grammar(Grammar::Regex(rx.clone())));
        }
        if let Some(c) = &self.guided_choice {
            if c.is_empty() {
                return Err(ApiError::invalid("guided_choice", "at least one choice is required"));
            }
            add("guided_choice", Constraint::Grammar(Grammar::Choice(c.clone())));
        }
        if let Some(g) = &self.guided_grammar {
            add("guided_grammar", Constraint::Grammar(Grammar::Lark(g.clone())));
        }
        if let Some(p) = &self.x_post {
            add("x_post", Constraint::Post(p.rules()?));
        }
        if found.len() > 1 {
            return Err(ApiError::invalid(
                found[1].field.split('.').next().unwrap_or_default(),
                format!("only one output constraint per request; `{}` is already set", found[0].field),
            ));
        }
        Ok(found.pop())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(v: Value) -> Result<Option<Tagged>, ApiError> {
        serde_json::from_value::<Structured>(v).expect("shape").constraint()
    }

    #[test]
    fn each_form_names_its_field() {
        let t = parse(serde_json::json!({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object"}}}}));
        assert_eq!(t.expect("ok").expect("some").field, "response_format.json_schema.schema");
        let t = parse(serde_json::json!({"guided_json": "{\"type\": \"integer\"}"})).expect("ok").expect("some");
        assert_eq!(t.constraint, Constraint::Grammar(Grammar::JsonSchema(serde_json::json!({"type": "integer"}))));
        assert!(parse(serde_json::json!({"response_format": {"type": "text"}})).expect("ok").is_none());
        let two = parse(serde_json::json!({"guided_regex": "a+", "x_post": {}})).expect_err("two");
        assert_eq!(two.param.as_deref(), Some("x_post"));
        let bad = parse(serde_json::json!({"x_post": {"platform": "myspace"}})).expect_err("platform");
        assert_eq!(bad.param.as_deref(), Some("x_post.platform"));
        let bad = parse(serde_json::json!({"response_format": {"type": "json_schema"}})).expect_err("missing");
        assert_eq!(bad.param.as_deref(), Some("response_format.json_schema"));
        let bad = parse(serde_json::json!({"response_format": {"type": "yaml"}})).expect_err("type");
        assert_eq!(bad.param.as_deref(), Some("response_format.type"));
    }
}
