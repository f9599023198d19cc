//! The request every chat API is parsed into, and the checks the APIs share.

use serde_json::{Map, Value};

use super::{ApiError, ChatApi};

/// Longest `message`, in characters (seeds 000 and 004).
pub const MAX_MESSAGE_CHARS: usize = 32_000;
/// Longest chatbase `userId` (seed 001).
pub const MAX_USER_ID_CHARS: usize = 128;
/// Longest key a client may choose for a conversation (guayaba `sessionKey`, the AI SDK's chat
/// `id`), in bytes of `[A-Za-z0-9._:-]`.
pub const MAX_CONVERSATION_KEY_LEN: usize = 256;

/// How the client names the conversation it continues.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Conversation {
    /// None named: a new conversation (or, on `agents`, the default one).
    New,
    /// An id agentgate gave out earlier.
    Existing(String),
    /// A key the client chose itself (guayaba `sessionKey`, the AI SDK's chat `id`): opens a
    /// conversation under that key if it is new.
    ClientKey(String),
}

impl Conversation {
    /// The id or key named, if any.
    pub fn named(&self) -> Option<&str> {
        match self {
            Conversation::New => None,
            Conversation::Existing(id) | Conversation::ClientKey(id) => Some(id),
        }
    }
}

/// One chat call, whatever API it came in.
#[derive(Debug, Clone, PartialEq)]
pub struct ChatRequest {
    /// `None` only on chatbase: continue after a tool result.
    pub message: Option<String>,
    pub conversation: Conversation,
    pub stream: bool,
    /// chatbase `userId` for a conversation this request opens (an existing one keeps its own).
    pub user_id: Option<String>,
    /// pharen options passed on to a pharen backend (model, enable_thinking, …); the run
    /// extras an ag-ui backend takes; how an OpenAI front writes its answer.
    pub options: Map<String, Value>,
    /// The agent the body names, on an API whose paths name none (the OpenAI APIs' `model`:
    /// an agent's id or name).
    pub agent: Option<String>,
}

/// A body that is not JSON of the expected shape.
pub(crate) fn malformed(api: &dyn ChatApi, e: serde_json::Error) -> ApiError {
    api.invalid(format!("malformed JSON body: {e}"))
}

/// The JSON type an optional field must have.
#[derive(Debug, Clone, Copy)]
pub(crate) enum JsonKind {
    String,
    Bool,
    Object,
}

impl JsonKind {
    /// 400 naming the field when `v` is not of this type.
    pub(crate) fn check(self, api: &dyn ChatApi, field: &str, v: &Value) -> Result<(), ApiError> {
        let (ok, expected) = match self {
            JsonKind::String => (v.is_string(), "a string"),
            JsonKind::Bool => (v.is_boolean(), "a boolean"),
            JsonKind::Object => (v.is_object(), "an object"),
        };
        match ok {
            true => Ok(()),
            false => Err(api
                .invalid(format!("`{field}` must be {expected}"))
                .with_details(serde_json::json!({ "field": field }))),
        }
    }
}

pub(crate) fn required_message(
    api: &dyn ChatApi,
    message: Option<Value>,
) -> Result<String, ApiError> {
    match message {
        Some(v) => message_string(api, v),
        None => Err(api.invalid("`message` is required".into())),
    }
}

pub(crate) fn message_string(api: &dyn ChatApi, message: Value) -> Result<String, ApiError> {
    match message {
        Value::String(s) if s.is_empty() => Err(api.invalid("`message` must not be empty".into())),
        Value::String(s) => {
            check_length(api, &s)?;
            Ok(s)
        }
        _ => Err(api.invalid("`message` must be a string".into())),
    }
}

pub(crate) fn check_length(api: &dyn ChatApi, message: &str) -> Result<(), ApiError> {
    let chars = message.chars().count();
    if chars > MAX_MESSAGE_CHARS {
        return Err(api.invalid(format!(
            "`message` is {chars} characters long; the maximum is {MAX_MESSAGE_CHARS}"
        )));
    }
    Ok(())
}

/// Whether `key` can name a conversation: 1 to [`MAX_CONVERSATION_KEY_LEN`] bytes of
/// `[A-Za-z0-9._:-]`.
pub(crate) fn is_conversation_key(key: &str) -> bool {
    (1..=MAX_CONVERSATION_KEY_LEN).contains(&key.len())
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
}

/// A conversation key the client chose: 1 to [`MAX_CONVERSATION_KEY_LEN`] bytes of
/// `[A-Za-z0-9._:-]`, so that it can be named in a path and listed back.
pub(crate) fn check_conversation_key(
    api: &dyn ChatApi,
    field: &str,
    key: &str,
) -> Result<(), ApiError> {
    match is_conversation_key(key) {
        true => Ok(()),
        false => Err(api.invalid(format!(
            "`{field}` must be at most {MAX_CONVERSATION_KEY_LEN} characters of letters, \
             digits, `.`, `_`, `:` or `-`"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::super::{parse_chat, Api};
    use super::*;

    #[test]
    fn message_limit_counts_characters_not_bytes() {
        let ok = "é".repeat(MAX_MESSAGE_CHARS);
        let body = serde_json::json!({ "message": ok }).to_string();
        assert!(parse_chat(Api::Agents, body.as_bytes(), false, false).is_ok());
        let long = "é".repeat(MAX_MESSAGE_CHARS + 1);
        let body = serde_json::json!({ "message": long }).to_string();
        let err = parse_chat(Api::Guayaba, body.as_bytes(), false, false).unwrap_err();
        assert_eq!(err.status, 422);
    }

    #[test]
    fn ai_sdk_body_takes_last_user_text_and_chat_id() {
        let body = br#"{"id":"chat-1","trigger":"submit-message","messages":[
            {"id":"1","role":"user","parts":[{"type":"text","text":"first"}]},
            {"id":"2","role":"assistant","parts":[{"type":"text","text":"answer"}]},
            {"id":"3","role":"user","parts":[{"type":"text","text":"sec"},{"type":"text","text":"ond"}]}]}"#;
        let req = parse_chat(Api::Chatbase, body, false, false).unwrap();
        assert_eq!(req.message.as_deref(), Some("second"));
        assert_eq!(req.conversation, Conversation::ClientKey("chat-1".into()));
        assert!(req.stream);
    }

    #[test]
    fn user_id_and_session_key_rules() {
        let bad = br#"{"message":"hi","userId":"a b"}"#;
        assert_eq!(
            parse_chat(Api::Chatbase, bad, false, false)
                .unwrap_err()
                .status,
            400
        );
        let bad = br#"{"message":"hi","sessionKey":"web:1"}"#;
        assert_eq!(
            parse_chat(Api::Guayaba, bad, false, false)
                .unwrap_err()
                .status,
            422
        );
    }
}
