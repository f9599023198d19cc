//! Conversation ids: agentgate owns the ids clients see and maps each to the backend's own id
//! once the backend reveals it (SPEC §5), so a conversation continues whatever the two APIs.
//! The mapping and the transcripts live in the store (`store::conversations`), so they survive
//! restarts and are shared by every replica on the same store.

use serde_json::json;

use super::body::CommitHook;
use super::meter::ChatMeter;
use crate::apis::{HistoryMessage, HistoryRole};
use crate::credits::to_milli;
use crate::fronts::{Api, Conversation};
use crate::store::{
    ConversationRecord, ConversationWrite, Exchange, NewMessage, Store, StoreError, UnixMs, WriteOp,
};

/// A conversation as one request sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// The id as stored (the client sees it in its front's form: [`session_key`] on guayaba).
    pub client_id: String,
    /// The backend's id, known after the first answer.
    pub backend_id: Option<String>,
    /// `Some`: the conversation exists, with this chatbase `userId` (immutable, SPEC §11).
    pub existing: Option<Option<String>>,
}

/// The client id of an account's default conversation with an agent on the `agents` front
/// (SPEC §7: a chat without `conversation_id` goes there).
pub const DEFAULT_CONVERSATION: &str = "default";

/// Longest title derived from a conversation's first message, in characters.
const TITLE_CHARS: usize = 80;

/// A fresh id in `front`'s form: a UUID for pharen, `api:…` for guayaba, opaque otherwise.
pub fn new_id(front: Api) -> String {
    front.new_conversation_id()
}

pub use crate::apis::guayaba::{session_key, SESSION_PREFIX};

/// The conversation a guayaba `sessionKey` names, if this account has it with this agent: the
/// key itself, else, for a key in [`session_key`]'s form of another front's id, that id.
pub async fn find_session(
    store: &Store,
    account: &str,
    agent: &str,
    key: &str,
) -> Result<Option<ConversationRecord>, StoreError> {
    if let Some(row) = store.conversation(account, agent, key).await? {
        return Ok(Some(row));
    }
    match key.strip_prefix(SESSION_PREFIX) {
        Some(other) if !other.starts_with(SESSION_PREFIX) && !other.is_empty() => {
            store.conversation(account, agent, other).await
        }
        _ => Ok(None),
    }
}

/// The conversation a request continues or opens; `None` when it names an id this account
/// does not have with this agent (a 404). A conversation is stored only once an answer
/// completes, so a request that fails or is refused leaves nothing behind.
pub async fn resolve(
    store: &Store,
    account: &str,
    agent: &str,
    front: Api,
    conversation: &Conversation,
) -> Result<Option<Resolved>, StoreError> {
    let (id, must_exist) = match conversation {
        // `agents`: no id, or the default's own id, is the account's default conversation
        // with this agent; it always exists, so it is opened on first use.
        Conversation::New if front.has_default_conversation() => (DEFAULT_CONVERSATION, false),
        Conversation::Existing(id) if id == DEFAULT_CONVERSATION => (id.as_str(), false),
        Conversation::New => {
            return Ok(Some(Resolved {
                client_id: new_id(front),
                backend_id: None,
                existing: None,
            }))
        }
        Conversation::Existing(id) => (id.as_str(), true),
        // A key the client chose (guayaba `sessionKey`, the AI SDK chat id): one this account
        // does not know opens a new conversation under it, never another account's.
        Conversation::ClientKey(id) => (id.as_str(), false),
    };
    let row = match (front, conversation) {
        (front, Conversation::ClientKey(key)) if front.keys_wrap_other_ids() => {
            find_session(store, account, agent, key).await?
        }
        _ => store.conversation(account, agent, id).await?,
    };
    if must_exist && row.is_none() {
        return Ok(None);
    }
    Ok(Some(match row {
        Some(r) => Resolved {
            client_id: r.id,
            backend_id: r.backend_id,
            existing: Some(r.user_id),
        },
        None => Resolved {
            client_id: id.to_owned(),
            backend_id: None,
            existing: None,
        },
    }))
}

/// The newest recorded messages of a conversation, oldest first, as sent to a backend that
/// keeps no conversation (SPEC §10): at most `limit` of them and `max_bytes` of text, read a
/// page at a time, starting at a user message.
pub async fn recent_messages(
    store: &Store,
    account: &str,
    agent: &str,
    conversation: &str,
    limit: u32,
    max_bytes: usize,
) -> Result<Vec<HistoryMessage>, StoreError> {
    // Small pages: each message read may hold a whole answer (`max_answer_bytes`).
    const PAGE: u32 = 20;
    let mut out = Vec::new();
    let mut bytes = 0usize;
    let mut before = None;
    'pages: while out.len() < limit as usize {
        let want = PAGE.min(limit - out.len() as u32);
        let page = store
            .history(account, agent, conversation, before, want)
            .await?;
        let more = page.len() == want as usize;
        before = page.last().map(|oldest| oldest.seq);
        for m in page {
            let role = match m.role.as_str() {
                "user" => HistoryRole::User,
                "assistant" => HistoryRole::Assistant,
                _ => continue,
            };
            bytes += m.content.len();
            if bytes > max_bytes {
                break 'pages;
            }
            out.push(HistoryMessage {
                role,
                content: m.content,
            });
        }
        if !more {
            break;
        }
    }
    out.reverse();
    let first_user = out
        .iter()
        .position(|m| m.role == HistoryRole::User)
        .unwrap_or(out.len());
    out.drain(..first_user);
    Ok(out)
}

/// The id of the last user message of a conversation, if one is recorded: what a chatbase
/// continuation without `message` (after a tool result, seed 002) answers to.
pub async fn last_user_message(
    store: &Store,
    account: &str,
    agent: &str,
    conversation: &str,
) -> Result<Option<String>, StoreError> {
    const PAGE: u32 = 20;
    let mut before = None;
    loop {
        let page = store
            .history(account, agent, conversation, before, PAGE)
            .await?;
        if let Some(m) = page.iter().find(|m| m.role == "user") {
            return Ok(Some(m.id.clone()));
        }
        match page.last() {
            Some(oldest) if page.len() == PAGE as usize => before = Some(oldest.seq),
            _ => return Ok(None),
        }
    }
}

/// What a request knows of its exchange before the answer.
#[derive(Debug, Clone)]
pub struct Pending {
    pub account: String,
    pub agent_id: String,
    pub front: Api,
    pub conversation_id: String,
    pub user_message: Option<String>,
    /// chatbase `userId` of a conversation this exchange opens.
    pub user_id: Option<String>,
    pub started_at: UnixMs,
    /// `false`: the agent's `record = false`; only the id mapping is kept.
    pub record: bool,
}

impl Pending {
    /// For a stream: when the answer has completed, queues its exchange and hands back what
    /// resolves once it is durable, or with the reason it cannot be (the stream's end waits).
    pub fn commit_hook(self, store: Store) -> CommitHook {
        Box::new(move |meter| {
            let exchange = self.exchange(meter, crate::store::now_ms())?;
            let (tx, rx) = tokio::sync::oneshot::channel();
            let op = WriteOp::Conversation(
                ConversationWrite::Record(Box::new(exchange)),
                Box::new(move |r| {
                    let _ = tx.send(r.map(drop).map_err(|e| {
                        tracing::error!(error = %e, "exchange not recorded");
                        e.to_string()
                    }));
                }),
            );
            match store.submit(op) {
                Ok(()) => Some(rx),
                Err(e) => {
                    tracing::error!(error = %e, "exchange not recorded");
                    None
                }
            }
        })
    }

    /// The exchange to store for a completed answer; `None` when the answer did not complete
    /// (only completed exchanges are recorded, SPEC §7).
    pub fn exchange(self, meter: &ChatMeter, now: UnixMs) -> Option<Exchange> {
        if !meter.finished() {
            return None;
        }
        let ids = meter.ids();
        let (user, assistant) = match (self.record, meter.transcript()) {
            (true, Some(answer)) => {
                let tool_calls = (!answer.tool_calls.is_empty()).then(|| {
                    let calls: Vec<_> = answer
                        .tool_calls
                        .iter()
                        .map(|c| {
                            let mut o = json!({
                                "toolCallId": c.id, "name": c.name, "input": c.input,
                            });
                            if let Some(out) = &c.output {
                                o["output"] = out.clone();
                            }
                            if let Some(err) = &c.error {
                                o["error"] = json!(err);
                            }
                            o
                        })
                        .collect();
                    serde_json::Value::Array(calls).to_string()
                });
                let user = self.user_message.as_ref().map(|m| NewMessage {
                    id: ids.user_message_id.clone(),
                    content: m.clone(),
                    tool_calls: None,
                    credits: None,
                    created_at: self.started_at,
                    truncated: false,
                    parts: Some(json!([{ "type": "text", "text": m }]).to_string()),
                });
                let assistant = NewMessage {
                    id: ids.message_id.clone(),
                    content: answer.text.clone(),
                    tool_calls,
                    credits: Some(to_milli(meter.final_charge())),
                    created_at: now.max(self.started_at),
                    truncated: meter.transcript_truncated(),
                    parts: meter
                        .parts()
                        .and_then(|p| serde_json::to_string(p.parts()).ok()),
                };
                (user, Some(assistant))
            }
            _ => (None, None),
        };
        let title = self
            .user_message
            .as_deref()
            .map(|m| m.chars().take(TITLE_CHARS).collect::<String>());
        Some(Exchange {
            account: self.account,
            agent_id: self.agent_id,
            conversation_id: self.conversation_id,
            front: self.front.as_str().to_owned(),
            backend_id: meter.backend_conversation.clone(),
            title,
            user_id: self.user_id,
            user,
            assistant,
            now,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{now_ms, SqliteOptions};

    async fn store() -> (Store, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open_sqlite(dir.path().join("t.db"), SqliteOptions::default())
            .await
            .unwrap();
        (s, dir)
    }

    fn exchange(account: &str, id: &str, backend: Option<&str>) -> Exchange {
        Exchange {
            account: account.into(),
            agent_id: "a1".into(),
            conversation_id: id.into(),
            front: "agents".into(),
            backend_id: backend.map(str::to_owned),
            title: None,
            user_id: None,
            user: None,
            assistant: None,
            now: now_ms(),
        }
    }

    #[tokio::test]
    async fn agents_front_without_an_id_uses_the_default_conversation() {
        let (s, _dir) = store().await;
        let first = resolve(&s, "acct", "a1", Api::Agents, &Conversation::New)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(first.client_id, DEFAULT_CONVERSATION);
        assert_eq!(first.backend_id, None);
        s.record_exchange(exchange("acct", DEFAULT_CONVERSATION, Some("backend-7")))
            .await
            .unwrap();
        for conversation in [
            Conversation::New,
            Conversation::Existing(DEFAULT_CONVERSATION.into()),
        ] {
            let again = resolve(&s, "acct", "a1", Api::Agents, &conversation)
                .await
                .unwrap()
                .unwrap();
            assert_eq!(again.client_id, DEFAULT_CONVERSATION);
            assert_eq!(again.backend_id.as_deref(), Some("backend-7"));
        }
        // Per agent and per account.
        let other_agent = resolve(&s, "acct", "a2", Api::Agents, &Conversation::New)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(other_agent.backend_id, None);
        let other_account = resolve(&s, "acct2", "a1", Api::Agents, &Conversation::New)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(other_account.backend_id, None);
        // Other fronts open a new conversation without an id, in their own id form.
        let chatbase = resolve(&s, "acct", "a1", Api::Chatbase, &Conversation::New)
            .await
            .unwrap()
            .unwrap();
        assert!(chatbase.client_id.starts_with("conv_"));
        let guayaba = resolve(&s, "acct", "a1", Api::Guayaba, &Conversation::New)
            .await
            .unwrap()
            .unwrap();
        assert!(guayaba.client_id.starts_with("api:"));
        let pharen = resolve(&s, "acct", "a1", Api::Pharen, &Conversation::New)
            .await
            .unwrap()
            .unwrap();
        assert!(uuid::Uuid::parse_str(&pharen.client_id).is_ok());
        // An unknown id is unknown; another account's id too.
        let unknown = Conversation::Existing("conv_x".into());
        assert_eq!(
            resolve(&s, "acct", "a1", Api::Agents, &unknown)
                .await
                .unwrap(),
            None
        );
    }

    #[tokio::test]
    async fn ids_are_per_account_and_a_known_backend_id_is_kept() {
        let (s, _dir) = store().await;
        s.record_exchange(exchange("acct", "conv_1", Some("b1")))
            .await
            .unwrap();
        s.record_exchange(exchange("acct", "conv_1", None))
            .await
            .unwrap();
        let key = Conversation::Existing("conv_1".into());
        let again = resolve(&s, "acct", "a1", Api::Chatbase, &key)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(again.backend_id.as_deref(), Some("b1"));
        assert_eq!(
            resolve(&s, "other", "a1", Api::Chatbase, &key)
                .await
                .unwrap(),
            None
        );
        // A client-chosen key of another account opens a fresh conversation, never theirs.
        let session = Conversation::ClientKey("conv_1".into());
        let fresh = resolve(&s, "other", "a1", Api::Guayaba, &session)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(fresh.backend_id, None);
    }

    fn said(id: &str, n: usize, text: &str) -> Exchange {
        let message = |role: &str| NewMessage {
            id: format!("{role}-{n}"),
            content: format!("{role} {text}"),
            tool_calls: None,
            credits: None,
            created_at: now_ms() + n as i64,
            truncated: false,
            parts: None,
        };
        Exchange {
            user: Some(message("user")),
            assistant: Some(message("assistant")),
            ..exchange("acct", id, Some("b"))
        }
    }

    #[tokio::test]
    async fn recent_messages_are_the_newest_oldest_first_within_both_bounds() {
        let (s, _dir) = store().await;
        for n in 0..60 {
            s.record_exchange(said("conv_h", n, &n.to_string()))
                .await
                .unwrap();
        }
        let texts =
            |m: &[HistoryMessage]| -> Vec<String> { m.iter().map(|m| m.content.clone()).collect() };
        // More than a page: the newest 101 messages, cut to start at a user message.
        let all = recent_messages(&s, "acct", "a1", "conv_h", 101, usize::MAX)
            .await
            .unwrap();
        assert_eq!(all.len(), 100);
        assert_eq!(all[0].role, HistoryRole::User);
        assert_eq!(texts(&all[..2]), ["user 10", "assistant 10"]);
        assert_eq!(texts(&all[98..]), ["user 59", "assistant 59"]);
        // The byte bound keeps the newest that fit: "assistant 59" + "user 59" = 19 bytes.
        let small = recent_messages(&s, "acct", "a1", "conv_h", 50, 25)
            .await
            .unwrap();
        assert_eq!(texts(&small), ["user 59", "assistant 59"]);
        let none = recent_messages(&s, "acct", "a1", "conv_h", 1, usize::MAX)
            .await
            .unwrap();
        assert!(
            none.is_empty(),
            "one message is an answer without its question"
        );
        let other = recent_messages(&s, "other", "a1", "conv_h", 50, usize::MAX)
            .await
            .unwrap();
        assert!(other.is_empty(), "another account's conversation");
    }
}
