//! Chat prompts, rendered by the model's own Jinja template
//! (`tokenizer.chat_template` in the GGUF) with minijinja, so any GGUF chat
//! model formats its conversation the way it was trained to.

use minijinja::{context, Environment, ErrorKind};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Who wrote a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Instructions for the assistant.
    System,
    /// The person talking to the model.
    User,
    /// The model's earlier turns.
    Assistant,
    /// A tool's result, answering one of the assistant's calls.
    Tool,
}

/// One turn of a conversation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    /// Author of the turn.
    pub role: Role,
    /// Its text.
    pub content: String,
    /// An assistant turn's tool calls, as OpenAI writes them but with
    /// `function.arguments` an object (what chat templates expect).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<serde_json::Value>,
    /// A tool turn's call id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
}

impl ChatMessage {
    /// A message with the given role.
    pub fn new(role: Role, content: impl Into<String>) -> Self {
        Self {
            role,
            content: content.into(),
            tool_calls: Vec::new(),
            tool_call_id: None,
        }
    }

    /// Whether it is part of a tool exchange (a call or a result).
    pub fn is_tool_turn(&self) -> bool {
        self.role == Role::Tool || !self.tool_calls.is_empty()
    }
}

/// A compiled chat template plus the strings templates commonly reference.
pub struct ChatTemplate {
    env: Environment<'static>,
    bos_token: String,
    eos_token: String,
    /// Whether it renders `tools` and answers calls as `<tool_call>` blocks
    /// (the Hermes format of Qwen2.5, Hermes and many more).
    speaks_tools: bool,
}

impl std::fmt::Debug for ChatTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatTemplate").finish_non_exhaustive()
    }
}

const TEMPLATE_NAME: &str = "chat";

impl ChatTemplate {
    /// Compile a template source. `bos_token`/`eos_token` are exposed to the
    /// template under those names, as Hugging Face's renderer does.
    pub fn new(source: &str, bos_token: &str, eos_token: &str) -> Result<Self> {
        let mut env = Environment::new();
        // Templates written for Python's Jinja call str methods (.strip(),
        // .startswith()) and helpers that HF's renderer provides.
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", |msg: String| -> std::result::Result<String, minijinja::Error> {
            Err(minijinja::Error::new(ErrorKind::InvalidOperation, msg))
        });
        env.add_template_owned(TEMPLATE_NAME, source.to_owned())
            .map_err(|e| Error::ChatTemplate(format!("cannot compile: {e}")))?;
        Ok(Self {
            env,
            bos_token: bos_token.to_owned(),
            eos_token: eos_token.to_owned(),
            speaks_tools: source.contains("tools") && source.contains("<tool_call>"),
        })
    }

    /// Whether the template renders tools itself, in the Hermes
    /// `<tool_call>` format the gateway constrains calls to.
    pub fn speaks_tools(&self) -> bool {
        self.speaks_tools
    }

    /// Render a conversation, ending with the assistant's turn opened when
    /// `add_generation_prompt` is set.
    pub fn render(&self, messages: &[ChatMessage], add_generation_prompt: bool) -> Result<String> {
        self.render_with_tools(messages, &[], add_generation_prompt)
    }

    /// [`ChatTemplate::render`] with `tools` (OpenAI's `{"type":
    /// "function", "function": {...}}` objects) in the template's context.
    pub fn render_with_tools(&self, messages: &[ChatMessage], tools: &[serde_json::Value], add_generation_prompt: bool) -> Result<String> {
        if messages.is_empty() {
            return Err(Error::InvalidRequest {
                param: "messages",
                message: "at least one message is required".into(),
            });
        }
        let tmpl = self
            .env
            .get_template(TEMPLATE_NAME)
            .map_err(|e| Error::ChatTemplate(e.to_string()))?;
        // HF's renderer passes `tools=None` without tools; so do we.
        let tools = (!tools.is_empty()).then_some(tools);
        tmpl.render(context! {
            messages => messages,
            tools => tools,
            add_generation_prompt => add_generation_prompt,
            bos_token => self.bos_token,
            eos_token => self.eos_token,
        })
        .map_err(|e| match e.kind() {
            // The template itself rejected the conversation (e.g. roles not alternating).
            ErrorKind::InvalidOperation => Error::InvalidRequest {
                param: "messages",
                message: e.detail().unwrap_or("rejected by the chat template").to_owned(),
            },
            _ => Error::ChatTemplate(e.to_string()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHATML: &str = "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

    #[test]
    fn chatml_adds_default_system_and_generation_prompt() -> Result<()> {
        let t = ChatTemplate::new(CHATML, "<|im_start|>", "<|im_end|>")?;
        let out = t.render(&[ChatMessage::new(Role::User, "Hi")], true)?;
        assert_eq!(
            out,
            "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
        );
        Ok(())
    }

    #[test]
    fn raise_exception_is_a_request_error() -> Result<()> {
        let t = ChatTemplate::new("{{ raise_exception('roles must alternate') }}", "", "")?;
        let err = t.render(&[ChatMessage::new(Role::User, "Hi")], true);
        assert!(matches!(err, Err(Error::InvalidRequest { param: "messages", .. })), "{err:?}");
        Ok(())
    }

    /// The tool parts of Qwen2.5's template: tools in the system turn,
    /// calls as `<tool_call>` blocks, results as `<tool_response>` user turns.
    const HERMES: &str = r#"{%- if tools %}<|im_start|>system
# Tools
<tools>{% for tool in tools %}
{{ tool | tojson }}{% endfor %}
</tools><|im_end|>
{% endif %}{%- for message in messages %}{%- if message.role == "assistant" and message.tool_calls %}<|im_start|>assistant{% for tool_call in message.tool_calls %}
<tool_call>
{"name": "{{ tool_call.function.name }}", "arguments": {{ tool_call.function.arguments | tojson }}}
</tool_call>{% endfor %}<|im_end|>
{% elif message.role == "tool" %}<|im_start|>user
<tool_response>
{{ message.content }}
</tool_response><|im_end|>
{% else %}<|im_start|>{{ message.role }}
{{ message.content }}<|im_end|>
{% endif %}{%- endfor %}{%- if add_generation_prompt %}<|im_start|>assistant
{% endif %}"#;

    #[test]
    fn a_tool_template_gets_tools_calls_and_results() -> Result<()> {
        let t = ChatTemplate::new(HERMES, "", "<|im_end|>")?;
        assert!(t.speaks_tools());
        assert!(!ChatTemplate::new(CHATML, "", "")?.speaks_tools());
        let tools = [serde_json::json!({"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}})];
        let mut call = ChatMessage::new(Role::Assistant, "");
        call.tool_calls = vec![serde_json::json!({"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}})];
        let mut result = ChatMessage::new(Role::Tool, "18 C");
        result.tool_call_id = Some("call_1".into());
        let out = t.render_with_tools(&[ChatMessage::new(Role::User, "Weather?"), call, result], &tools, true)?;
        assert!(out.starts_with("<|im_start|>system\n# Tools\n<tools>\n{") && out.contains("\"get_weather\""), "{out}");
        assert!(out.contains("<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\":"), "{out}");
        assert!(out.contains("<|im_start|>user\n<tool_response>\n18 C\n</tool_response>"), "{out}");
        assert!(out.ends_with("<|im_start|>assistant\n"));
        Ok(())
    }

    #[test]
    fn python_string_methods_work() -> Result<()> {
        let t = ChatTemplate::new("{{ messages[0].content.strip() }}", "", "")?;
        assert_eq!(t.render(&[ChatMessage::new(Role::User, "  x ")], false)?, "x");
        Ok(())
    }
}
