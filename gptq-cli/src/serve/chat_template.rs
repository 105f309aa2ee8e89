//! The chat template. GPT-2 was trained on plain web text and has no chat
//! format, so a conversation is rendered as a plain transcript, which the
//! model continues as text:
//!
//! ```text
//! <system and developer messages, one per paragraph>
//!
//! User: <message>
//! Assistant: <message>
//! User: <message>
//! Assistant:
//! ```
//!
//! The system text (if any) comes first, followed by a blank line; each
//! other message is one line `Role: content` (a multi-line message keeps
//! its line breaks); the prompt ends with `Assistant:` and the model writes
//! the answer after it. Generation also stops at `\nUser:` (the model
//! starting the user's next turn), which is not returned.

use serde::Deserialize;
use serde_json::Value;

use super::error::ApiError;

/// The template in one line, for `GET /props` (where llama-server gives its
/// Jinja source).
pub const DESCRIPTION: &str = "plain transcript: the system text and a blank line, then one `User: …` or `Assistant: …` line per message, ending with `Assistant:` (stop: `\nUser:`)";

/// Stop strings every chat request gets.
pub const CHAT_STOP: &[&str] = &["\nUser:"];

/// One message of `messages`.
#[derive(Clone, Debug, Deserialize)]
pub struct Message {
    /// `system`, `developer`, `user` or `assistant`.
    pub role: String,
    /// A string, or a list of parts of which only `{"type": "text"}` ones are
    /// accepted.
    #[serde(default)]
    pub content: Value,
}

/// The text of a message's content.
fn content_text(i: usize, content: &Value) -> Result<String, ApiError> {
    let param = format!("messages[{i}].content");
    match content {
        Value::Null => Ok(String::new()),
        Value::String(s) => Ok(s.clone()),
        Value::Array(parts) => {
            let mut text = String::new();
            for part in parts {
                match (part.get("type").and_then(Value::as_str), part.get("text")) {
                    (Some("text"), Some(Value::String(t))) => text.push_str(t),
                    _ => {
                        return Err(ApiError::invalid_param(
                            &param,
                            "only text content parts ({\"type\": \"text\", \"text\": ...}) are supported",
                        ));
                    }
                }
            }
            Ok(text)
        }
        _ => Err(ApiError::invalid_param(
            &param,
            "content must be a string or a list of text parts",
        )),
    }
}

/// Renders `messages` as the transcript prompt.
pub fn render(messages: &[Message]) -> Result<String, ApiError> {
    if messages.is_empty() {
        return Err(ApiError::invalid_param("messages", "messages is empty"));
    }
    let mut system = Vec::new();
    let mut turns = String::new();
    for (i, m) in messages.iter().enumerate() {
        let text = content_text(i, &m.content)?;
        match m.role.as_str() {
            "system" | "developer" => system.push(text),
            "user" => turns.push_str(&format!("User: {text}\n")),
            "assistant" => turns.push_str(&format!("Assistant: {text}\n")),
            other => {
                return Err(ApiError::invalid_param(
                    &format!("messages[{i}].role"),
                    format!("role '{other}' is not supported (system, developer, user, assistant)"),
                ));
            }
        }
    }
    let mut out = String::new();
    if !system.is_empty() {
        out.push_str(&system.join("\n\n"));
        out.push_str("\n\n");
    }
    out.push_str(&turns);
    out.push_str("Assistant:");
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn msgs(v: Value) -> Vec<Message> {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn transcript() {
        let m = msgs(json!([
            {"role": "system", "content": "A friendly chat."},
            {"role": "user", "content": "Hello!"},
            {"role": "assistant", "content": "Hi."},
            {"role": "user", "content": [{"type": "text", "text": "How are "}, {"type": "text", "text": "you?"}]}
        ]));
        assert_eq!(
            render(&m).unwrap(),
            "A friendly chat.\n\nUser: Hello!\nAssistant: Hi.\nUser: How are you?\nAssistant:"
        );
        assert_eq!(
            render(&msgs(json!([{"role": "user", "content": "x"}]))).unwrap(),
            "User: x\nAssistant:"
        );
    }

    #[test]
    fn refusals_name_the_field() {
        let e = render(&msgs(json!([{"role": "tool", "content": "x"}]))).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("messages[0].role"));
        let e = render(&msgs(
            json!([{"role": "user", "content": [{"type": "image_url"}]}]),
        ))
        .unwrap_err();
        assert_eq!(e.param.as_deref(), Some("messages[0].content"));
        assert!(render(&[]).is_err());
    }
}
