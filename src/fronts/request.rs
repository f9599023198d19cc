//! Chat request bodies of the four APIs, parsed and validated into one [`ChatRequest`].

use serde::Deserialize;
use serde_json::{Map, Value};

use super::{Api, ApiError};

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

/// One chat call, whatever API it came in.
#[derive(Debug, Clone, PartialEq)]
pub struct ChatRequest {
    /// `None` only on chatbase: continue after a tool result.
    pub message: Option<String>,
    pub conversation: Conversation,
    pub stream: bool,
    /// chatbase `userId` for a conversation this request opens (an existing one keeps its own).
    pub user_id: Option<String>,
    /// pharen options passed on to a pharen backend (model, enable_thinking, …).
    pub options: Map<String, Value>,
}

/// pharen's optional fields passed on to a pharen backend, with their types (seed 000).
const PHAREN_OPTIONS: [(&str, JsonKind); 6] = [
    ("model", JsonKind::String),
    ("enable_thinking", JsonKind::Bool),
    ("artifact_mode", JsonKind::Bool),
    ("artifact_category", JsonKind::String),
    ("page_context", JsonKind::Object),
    ("context", JsonKind::Object),
];

/// The JSON type an optional field must have.
#[derive(Debug, Clone, Copy)]
enum JsonKind {
    String,
    Bool,
    Object,
}

impl JsonKind {
    /// 400 naming the field when `v` is not of this type.
    fn check(self, api: Api, field: &str, v: &Value) -> Result<(), ApiError> {
        let (ok, expected) = match self {
            JsonKind::String => (v.is_string(), "a string"),
            JsonKind::Bool => (v.is_boolean(), "a boolean"),
            JsonKind::Object => (v.is_object(), "an object"),
        };
        match ok {
            true => Ok(()),
            false => Err(
                ApiError::invalid(api, format!("`{field}` must be {expected}"))
                    .with_details(serde_json::json!({ "field": field })),
            ),
        }
    }
}

#[derive(Deserialize)]
struct PharenBody {
    message: Option<Value>,
    /// Everything else: `conversation_uuid`/`conversation_id` and [`PHAREN_OPTIONS`] (a
    /// JSON `null` is a wrong type, not an absent field).
    #[serde(flatten)]
    options: Map<String, Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ChatbaseBody {
    message: Option<Value>,
    conversation_id: Option<String>,
    stream: Option<bool>,
    user_id: Option<String>,
    /// The AI SDK's `DefaultChatTransport` body: `{id, messages, trigger}`.
    id: Option<String>,
    messages: Option<Vec<UiMessage>>,
}

#[derive(Deserialize)]
struct UiMessage {
    role: String,
    #[serde(default)]
    parts: Vec<UiPart>,
}

#[derive(Deserialize)]
struct UiPart {
    #[serde(rename = "type")]
    ty: String,
    text: Option<String>,
}

#[derive(Deserialize)]
struct AgentsBody {
    message: Option<Value>,
    conversation_id: Option<String>,
    stream: Option<bool>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct GuayabaBody {
    message: Option<Value>,
    session_key: Option<String>,
    stream: Option<bool>,
}

/// Parses and validates a chat body. `wants_sse`: the client sent `Accept: text/event-stream`
/// (pharen streams on that); `stream_path`: the `agents` `/chat/stream` path.
pub fn parse_chat(
    api: Api,
    body: &[u8],
    wants_sse: bool,
    stream_path: bool,
) -> Result<ChatRequest, ApiError> {
    let invalid = |m: String| ApiError::invalid(api, m);
    let json_err = |e: serde_json::Error| invalid(format!("malformed JSON body: {e}"));
    match api {
        Api::Pharen => {
            let b: PharenBody = serde_json::from_slice(body).map_err(json_err)?;
            let message = required_message(api, b.message)?;
            let mut options = b.options;
            let mut conversation = Conversation::New;
            for field in ["conversation_id", "conversation_uuid"] {
                match options.remove(field) {
                    Some(Value::String(id)) => conversation = Conversation::Existing(id),
                    Some(v) => JsonKind::String.check(api, field, &v)?,
                    None => {}
                }
            }
            options.retain(|k, _| PHAREN_OPTIONS.iter().any(|(name, _)| name == k));
            for (name, kind) in PHAREN_OPTIONS {
                if let Some(v) = options.get(name) {
                    kind.check(api, name, v)?;
                }
            }
            Ok(ChatRequest {
                message: Some(message),
                conversation,
                stream: wants_sse,
                user_id: None,
                options,
            })
        }
        Api::Chatbase => {
            let b: ChatbaseBody = serde_json::from_slice(body).map_err(json_err)?;
            // `userId` applies only to a conversation being opened; with a `conversationId` it
            // is ignored, even when it breaks the pattern (seed 001).
            let user_id = match (&b.messages, &b.conversation_id) {
                (None, Some(_)) => None,
                _ => b.user_id,
            };
            if let Some(user_id) = &user_id {
                validate_user_id(api, user_id)?;
            }
            let (message, conversation) = match b.messages {
                Some(messages) => {
                    let text = last_user_text(&messages).ok_or_else(|| {
                        invalid("`messages` has no user message with text".into())
                    })?;
                    check_length(api, &text)?;
                    let conversation = match b.id.or(b.conversation_id) {
                        Some(id) => {
                            check_conversation_key(api, "id", &id)?;
                            Conversation::ClientKey(id)
                        }
                        None => Conversation::New,
                    };
                    (Some(text), conversation)
                }
                None => {
                    let message = match b.message {
                        None => None,
                        Some(v) => Some(message_string(api, v)?),
                    };
                    if message.is_none() && b.conversation_id.is_none() {
                        return Err(invalid(
                            "`message` is required when no `conversationId` is given".into(),
                        ));
                    }
                    let conversation = match b.conversation_id {
                        Some(id) => Conversation::Existing(id),
                        None => Conversation::New,
                    };
                    (message, conversation)
                }
            };
            Ok(ChatRequest {
                message,
                conversation,
                stream: b.stream.unwrap_or(true),
                user_id,
                options: Map::new(),
            })
        }
        Api::Agents => {
            let b: AgentsBody = serde_json::from_slice(body).map_err(json_err)?;
            let message = required_message(api, b.message)?;
            Ok(ChatRequest {
                message: Some(message),
                conversation: match b.conversation_id {
                    Some(id) => Conversation::Existing(id),
                    None => Conversation::New,
                },
                stream: stream_path || b.stream.unwrap_or(false),
                user_id: None,
                options: Map::new(),
            })
        }
        Api::Guayaba => {
            let b: GuayabaBody = serde_json::from_slice(body).map_err(json_err)?;
            let message = required_message(api, b.message)?;
            let conversation = match b.session_key {
                Some(key) if key.starts_with("api:") && key.len() > 4 => {
                    check_conversation_key(api, "sessionKey", &key)?;
                    Conversation::ClientKey(key)
                }
                Some(_) => return Err(invalid("`sessionKey` must start with `api:`".into())),
                None => Conversation::New,
            };
            Ok(ChatRequest {
                message: Some(message),
                conversation,
                stream: b.stream.unwrap_or(false),
                user_id: None,
                options: Map::new(),
            })
        }
    }
}

fn required_message(api: Api, message: Option<Value>) -> Result<String, ApiError> {
    match message {
        Some(v) => message_string(api, v),
        None => Err(ApiError::invalid(api, "`message` is required")),
    }
}

fn message_string(api: Api, message: Value) -> Result<String, ApiError> {
    match message {
        Value::String(s) if s.is_empty() => {
            Err(ApiError::invalid(api, "`message` must not be empty"))
        }
        Value::String(s) => {
            check_length(api, &s)?;
            Ok(s)
        }
        _ => Err(ApiError::invalid(api, "`message` must be a string")),
    }
}

fn check_length(api: Api, message: &str) -> Result<(), ApiError> {
    let chars = message.chars().count();
    if chars > MAX_MESSAGE_CHARS {
        return Err(ApiError::invalid(
            api,
            format!("`message` is {chars} characters long; the maximum is {MAX_MESSAGE_CHARS}"),
        ));
    }
    Ok(())
}

/// A conversation key the client chose: 1 to [`MAX_CONVERSATION_KEY_LEN`] bytes of
/// `[A-Za-z0-9._:-]`, so that it can be named in a path and listed back.
fn check_conversation_key(api: Api, field: &str, key: &str) -> Result<(), ApiError> {
    let ok = (1..=MAX_CONVERSATION_KEY_LEN).contains(&key.len())
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'));
    match ok {
        true => Ok(()),
        false => Err(ApiError::invalid(
            api,
            format!(
                "`{field}` must be at most {MAX_CONVERSATION_KEY_LEN} characters of letters, \
                 digits, `.`, `_`, `:` or `-`"
            ),
        )),
    }
}

fn validate_user_id(api: Api, user_id: &str) -> Result<(), ApiError> {
    let ok = !user_id.is_empty()
        && user_id.chars().count() <= MAX_USER_ID_CHARS
        && user_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(ApiError::invalid(
            api,
            "`userId` must be 1 to 128 characters of letters, digits, `.`, `_` or `-`",
        ))
    }
}

fn last_user_text(messages: &[UiMessage]) -> Option<String> {
    let last = messages.iter().rev().find(|m| m.role == "user")?;
    let text: String = last
        .parts
        .iter()
        .filter(|p| p.ty == "text")
        .filter_map(|p| p.text.as_deref())
        .collect();
    (!text.is_empty()).then_some(text)
}

#[cfg(test)]
mod tests {
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
