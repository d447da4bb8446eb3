//! Tool calling on the local model: OpenAI's `tools`, `tool_choice` and
//! `parallel_tool_calls`, and `tool` messages, as a prompt and a grammar.
//!
//! A model whose GGUF chat template renders tools itself in the Hermes
//! format gets them through its template (the local provider asks the
//! engine). Otherwise the prompt is written here, in the same format (what
//! Qwen2.5, Hermes and many GGUF chat templates are trained on), into the
//! system message: the functions as JSON inside `<tools></tools>`, each
//! call answered as
//!
//! ```text
//! <tool_call>
//! {"name": "get_weather", "arguments": {"city": "Paris"}}
//! </tool_call>
//! ```
//!
//! an assistant turn's earlier calls written back the same way, and tool
//! results as a user turn of `<tool_response>` blocks. The model's answer
//! is constrained by a Lark grammar: under `required` or a named function
//! it is one call (or, with `parallel_tool_calls`, several, one per line),
//! each call's arguments valid under that function's JSON schema; under
//! `auto` it is either calls or text that does not start with `<`; under
//! `none` nothing is constrained and the tools are not shown.

use inference::{ChatMessage, Grammar, Role};
use serde_json::{json, Value};

use crate::error::ApiError;

/// One function the model may call.
#[derive(Clone, Debug, PartialEq)]
pub struct Tool {
    /// Its name (`^[a-zA-Z0-9_-]{1,64}$`, as OpenAI allows).
    pub name: String,
    /// What it does, for the model.
    pub description: Option<String>,
    /// The JSON schema of its arguments.
    pub parameters: Value,
}

/// `tool_choice`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ToolChoice {
    /// Never call.
    None,
    /// Call or answer, as the model likes.
    Auto,
    /// Call at least one.
    Required,
    /// Call this one.
    Named(String),
}

/// What a request says about tools, checked.
#[derive(Clone, Debug, PartialEq)]
pub struct Tools {
    /// The functions.
    pub tools: Vec<Tool>,
    /// How the model may use them.
    pub choice: ToolChoice,
    /// More than one call per answer.
    pub parallel: bool,
}

const OPEN: &str = "<tool_call>\n";
const CLOSE: &str = "}\n</tool_call>";

fn valid_name(n: &str) -> bool {
    !n.is_empty() && n.len() <= 64 && n.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

impl Tools {
    /// Parse `tools`, `tool_choice` and `parallel_tool_calls`; `None` when
    /// the request has no tools.
    pub fn parse(tools: Option<&[Value]>, choice: Option<&Value>, parallel: Option<bool>) -> Result<Option<Self>, ApiError> {
        let list = tools.unwrap_or_default();
        if list.is_empty() {
            if choice.is_some_and(|c| c != "none" && c != "auto") {
                return Err(ApiError::invalid("tool_choice", "tool_choice needs tools"));
            }
            return Ok(None);
        }
        let mut out = Vec::with_capacity(list.len());
        for (i, t) in list.iter().enumerate() {
            if t["type"] != "function" {
                return Err(ApiError::invalid(format!("tools[{i}].type"), "only `function` tools exist"));
            }
            let f = &t["function"];
            let name = f["name"].as_str().unwrap_or_default();
            if !valid_name(name) {
                return Err(ApiError::invalid(format!("tools[{i}].function.name"), "a name of 1 to 64 letters, digits, `_` or `-`"));
            }
            if out.iter().any(|o: &Tool| o.name == name) {
                return Err(ApiError::invalid(format!("tools[{i}].function.name"), format!("`{name}` is defined twice")));
            }
            let parameters = match &f["parameters"] {
                Value::Null => json!({"type": "object", "properties": {}}),
                p @ Value::Object(_) => p.clone(),
                _ => return Err(ApiError::invalid(format!("tools[{i}].function.parameters"), "a JSON schema object")),
            };
            let description = f["description"].as_str().map(str::to_owned);
            out.push(Tool { name: name.to_owned(), description, parameters });
        }
        let choice = match choice {
            None => ToolChoice::Auto,
            Some(Value::String(s)) => match s.as_str() {
                "none" => ToolChoice::None,
                "auto" => ToolChoice::Auto,
                "required" => ToolChoice::Required,
                other => return Err(ApiError::invalid("tool_choice", format!("`{other}` is not one of none, auto, required"))),
            },
            Some(v) => {
                let name = v["function"]["name"].as_str().unwrap_or_default();
                if v["type"] != "function" || !out.iter().any(|t| t.name == name) {
                    return Err(ApiError::invalid("tool_choice", "a named choice is {\"type\": \"function\", \"function\": {\"name\": one of the tools}}"));
                }
                ToolChoice::Named(name.to_owned())
            }
        };
        Ok(Some(Self { tools: out, choice, parallel: parallel.unwrap_or(true) }))
    }

    /// The system prompt that describes the tools.
    pub fn system_prompt(&self) -> String {
        let mut s = String::from(
            "# Tools\n\nYou may call one or more functions to assist with the user query.\n\n\
             You are provided with function signatures within <tools></tools> XML tags:\n<tools>",
        );
        for f in self.functions() {
            s.push('\n');
            s.push_str(&f.to_string());
        }
        s.push_str(
            "\n</tools>\n\nFor each function call, return a json object with function name and arguments within \
             <tool_call></tool_call> XML tags:\n<tool_call>\n{\"name\": <function-name>, \"arguments\": <args-json-object>}\n</tool_call>",
        );
        s
    }

    /// Whether the model may call anything (not under `tool_choice: none`).
    pub fn may_call(&self) -> bool {
        self.choice != ToolChoice::None
    }

    /// The functions as OpenAI and chat templates write them; none under
    /// `tool_choice: none` (the model is not shown what it may not call).
    pub fn functions(&self) -> Vec<Value> {
        if !self.may_call() {
            return Vec::new();
        }
        self.tools
            .iter()
            .map(|t| {
                let mut f = json!({"name": t.name, "parameters": t.parameters});
                if let Some(d) = &t.description {
                    f["description"] = json!(d);
                }
                json!({"type": "function", "function": f})
            })
            .collect()
    }

    /// The grammar the answer follows; `None` under `tool_choice: none`.
    pub fn grammar(&self) -> Option<Grammar> {
        let callable: Vec<&Tool> = match &self.choice {
            ToolChoice::None => return None,
            ToolChoice::Named(n) => self.tools.iter().filter(|t| &t.name == n).collect(),
            ToolChoice::Auto | ToolChoice::Required => self.tools.iter().collect(),
        };
        let lit = |s: &str| Value::String(s.to_owned()).to_string();
        let mut g = String::new();
        let many = self.parallel && !matches!(self.choice, ToolChoice::Named(_));
        let calls = if many { "call (\"\\n\" call)*" } else { "call" };
        match self.choice {
            ToolChoice::Auto => g.push_str(&format!("start: calls | TEXT\nTEXT: /[^<](.|\\n)*/\ncalls: {calls}\n")),
            _ => g.push_str(&format!("start: {calls}\n")),
        }
        let alternatives: Vec<String> = (0..callable.len()).map(|i| format!("call_{i}")).collect();
        g.push_str(&format!("call: {} ({})\n", lit(&format!("{OPEN}{{\"name\": ")), alternatives.join(" | ")));
        for (i, t) in callable.iter().enumerate() {
            let mut schema = t.parameters.clone();
            if let Value::Object(o) = &mut schema {
                o.entry("x-guidance").or_insert(json!({"whitespace_flexible": false, "item_separator": ", ", "key_separator": ": "}));
            }
            g.push_str(&format!("call_{i}: {} args_{i} {}\n", lit(&format!("{}, \"arguments\": ", lit(&t.name))), lit(CLOSE)));
            g.push_str(&format!("args_{i}: %json {schema}\n"));
        }
        Some(Grammar::Lark(g))
    }
}

/// OpenAI's call with `function.arguments` (a JSON string) as the object it
/// holds: what chat templates and the Hermes format write.
pub fn call_with_object_arguments(call: &Value) -> Value {
    let mut c = call.clone();
    if let Some(args) = call["function"]["arguments"].as_str().and_then(|a| serde_json::from_str::<Value>(a).ok()) {
        c["function"]["arguments"] = args;
    }
    c
}

/// A call written back into the conversation as the model writes one.
fn written_call(call: &Value) -> String {
    let f = &call["function"];
    format!("{OPEN}{{\"name\": {}, \"arguments\": {}{CLOSE}", f["name"], f["arguments"])
}

/// The conversation with tools written in as the documented prompt (for a
/// chat template that does not render tools itself): the tools'
/// description in the system message, earlier calls in their assistant
/// turns, results as user turns of `<tool_response>` blocks (consecutive
/// results in one turn).
pub fn conversation(messages: &[ChatMessage], tools: Option<&Tools>) -> Vec<ChatMessage> {
    let mut out: Vec<ChatMessage> = Vec::with_capacity(messages.len() + 1);
    let mut results_open = false;
    for m in messages {
        if m.role == Role::Tool {
            let block = format!("<tool_response>\n{}\n</tool_response>", m.content);
            match out.last_mut() {
                Some(last) if results_open => {
                    last.content.push('\n');
                    last.content.push_str(&block);
                }
                _ => out.push(ChatMessage::new(Role::User, block)),
            }
            results_open = true;
            continue;
        }
        let mut text = m.content.clone();
        for call in &m.tool_calls {
            if !text.is_empty() {
                text.push('\n');
            }
            text.push_str(&written_call(call));
        }
        out.push(ChatMessage::new(m.role, text));
        results_open = false;
    }
    if let Some(t) = tools.filter(|t| t.may_call()) {
        let prompt = t.system_prompt();
        match out.first_mut() {
            Some(first) if first.role == Role::System => first.content = format!("{}\n\n{prompt}", first.content),
            _ => out.insert(0, ChatMessage::new(Role::System, prompt)),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn weather() -> Value {
        json!([{"type": "function", "function": {"name": "get_weather", "description": "Weather now", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}])
    }

    #[test]
    fn choices_and_bad_tools_are_checked() {
        let tools = weather();
        let t = Tools::parse(tools.as_array().map(Vec::as_slice), Some(&json!("required")), None).expect("ok").expect("some");
        assert_eq!((t.choice.clone(), t.parallel), (ToolChoice::Required, true));
        let named = json!({"type": "function", "function": {"name": "get_weather"}});
        let t = Tools::parse(tools.as_array().map(Vec::as_slice), Some(&named), Some(false)).expect("ok").expect("some");
        assert_eq!(t.choice, ToolChoice::Named("get_weather".into()));
        let unknown = json!({"type": "function", "function": {"name": "nope"}});
        assert_eq!(Tools::parse(tools.as_array().map(Vec::as_slice), Some(&unknown), None).expect_err("unknown").param.as_deref(), Some("tool_choice"));
        let bad = json!([{"type": "function", "function": {"name": "has space"}}]);
        assert_eq!(Tools::parse(bad.as_array().map(Vec::as_slice), None, None).expect_err("name").param.as_deref(), Some("tools[0].function.name"));
        assert!(Tools::parse(None, Some(&json!("required")), None).is_err());
    }

    #[test]
    fn results_follow_calls_in_the_hermes_format() {
        let tools = Tools::parse(weather().as_array().map(Vec::as_slice), None, None).expect("ok");
        let call = json!({"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}});
        let mut assistant = ChatMessage::new(Role::Assistant, "");
        assistant.tool_calls = vec![call_with_object_arguments(&call)];
        let turns = [
            ChatMessage::new(Role::User, "Weather in Paris?"),
            assistant,
            ChatMessage::new(Role::Tool, "18 C"),
            ChatMessage::new(Role::Tool, "sunny"),
        ];
        let m = conversation(&turns, tools.as_ref());
        assert_eq!(m[0].role, Role::System);
        assert!(m[0].content.contains("\"name\":\"get_weather\""), "{}", m[0].content);
        assert_eq!(m[2].content, "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\":\"Paris\"}}\n</tool_call>");
        assert_eq!(m[3].content, "<tool_response>\n18 C\n</tool_response>\n<tool_response>\nsunny\n</tool_response>");
    }
}
