//! Conversation ids: agentgate owns the ids clients see and maps each to the backend's own id
//! once the backend reveals it (SPEC §5), so a conversation continues whatever the two APIs.

use dashmap::DashMap;

use crate::fronts::{Api, Conversation};

/// A conversation as one request sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// The id the client sees.
    pub client_id: String,
    /// The backend's id, known after the first answer.
    pub backend_id: Option<String>,
}

/// The client id of an account's default conversation with an agent on the `agents` front
/// (SPEC §7: a chat without `conversation_id` goes there).
pub const DEFAULT_CONVERSATION: &str = "default";

/// In-process map (account, agent, client id) → backend id.
#[derive(Debug, Default)]
pub struct Conversations {
    map: DashMap<(String, String, String), Option<String>>,
}

impl Conversations {
    /// The conversation a request continues or opens; `None` when it names an id this
    /// account does not have with this agent.
    pub fn resolve(
        &self,
        account: &str,
        agent: &str,
        front: Api,
        conversation: &Conversation,
    ) -> Option<Resolved> {
        let key = |id: &str| (account.to_owned(), agent.to_owned(), id.to_owned());
        match conversation {
            // `agents`: no id, or the default's own id, is the account's default conversation
            // with this agent; it always exists, so it is opened on first use.
            Conversation::New if front == Api::Agents => self.resolve(
                account,
                agent,
                front,
                &Conversation::ClientKey(DEFAULT_CONVERSATION.into()),
            ),
            Conversation::Existing(id) if front == Api::Agents && id == DEFAULT_CONVERSATION => {
                self.resolve(account, agent, front, &Conversation::ClientKey(id.clone()))
            }
            Conversation::New => {
                let client_id = match front {
                    Api::Pharen => uuid::Uuid::new_v4().to_string(),
                    Api::Guayaba => format!("api:{}", uuid::Uuid::new_v4()),
                    Api::Chatbase | Api::Agents => {
                        format!("conv_{}", uuid::Uuid::new_v4().simple())
                    }
                };
                // Remembered only once an answer completes (`record`): a request that fails
                // or is refused leaves nothing behind.
                Some(Resolved {
                    client_id,
                    backend_id: None,
                })
            }
            Conversation::Existing(id) => {
                let backend_id = self.map.get(&key(id))?.value().clone();
                Some(Resolved {
                    client_id: id.clone(),
                    backend_id,
                })
            }
            Conversation::ClientKey(id) => {
                let backend_id = self.map.get(&key(id)).and_then(|e| e.value().clone());
                Some(Resolved {
                    client_id: id.clone(),
                    backend_id,
                })
            }
        }
    }

    /// Remembers a conversation after an answer, with the backend's id if it revealed one
    /// (a known backend id is kept when a later answer reveals none).
    pub fn record(&self, account: &str, agent: &str, client_id: &str, backend_id: Option<&str>) {
        let key = (account.to_owned(), agent.to_owned(), client_id.to_owned());
        let mut entry = self.map.entry(key).or_insert(None);
        if let Some(id) = backend_id {
            *entry = Some(id.to_owned());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agents_front_without_an_id_uses_the_default_conversation() {
        let c = Conversations::default();
        let first = c
            .resolve("acct", "a1", Api::Agents, &Conversation::New)
            .unwrap();
        assert_eq!(first.client_id, DEFAULT_CONVERSATION);
        assert_eq!(first.backend_id, None);
        c.record("acct", "a1", DEFAULT_CONVERSATION, Some("backend-7"));
        for conversation in [
            Conversation::New,
            Conversation::Existing(DEFAULT_CONVERSATION.into()),
        ] {
            let again = c.resolve("acct", "a1", Api::Agents, &conversation).unwrap();
            assert_eq!(again.client_id, DEFAULT_CONVERSATION);
            assert_eq!(again.backend_id.as_deref(), Some("backend-7"));
        }
        // Per agent and per account.
        let other_agent = c
            .resolve("acct", "a2", Api::Agents, &Conversation::New)
            .unwrap();
        assert_eq!(other_agent.backend_id, None);
        let other_account = c
            .resolve("acct2", "a1", Api::Agents, &Conversation::New)
            .unwrap();
        assert_eq!(other_account.backend_id, None);
        // Other fronts still open a new conversation without an id.
        let chatbase = c
            .resolve("acct", "a1", Api::Chatbase, &Conversation::New)
            .unwrap();
        assert_ne!(chatbase.client_id, DEFAULT_CONVERSATION);
        // An unknown id is still unknown.
        assert!(c
            .resolve(
                "acct",
                "a1",
                Api::Agents,
                &Conversation::Existing("conv_x".into())
            )
            .is_none());
    }

    #[test]
    fn only_answered_conversations_are_kept() {
        let c = Conversations::default();
        let failed = c
            .resolve("acct", "a1", Api::Chatbase, &Conversation::New)
            .unwrap();
        let key = Conversation::Existing(failed.client_id.clone());
        assert_eq!(c.resolve("acct", "a1", Api::Chatbase, &key), None);
        assert!(
            c.map.is_empty(),
            "a request that never answered leaves nothing"
        );
        c.record("acct", "a1", &failed.client_id, None);
        let again = c.resolve("acct", "a1", Api::Chatbase, &key).unwrap();
        assert_eq!(again.backend_id, None);
        c.record("acct", "a1", &failed.client_id, Some("b1"));
        c.record("acct", "a1", &failed.client_id, None);
        let again = c.resolve("acct", "a1", Api::Chatbase, &key).unwrap();
        assert_eq!(
            again.backend_id.as_deref(),
            Some("b1"),
            "a known backend id is kept"
        );
        assert_eq!(c.resolve("other", "a1", Api::Chatbase, &key), None);
    }
}
