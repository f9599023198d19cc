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
            Conversation::New => {
                let client_id = match front {
                    Api::Pharen => uuid::Uuid::new_v4().to_string(),
                    Api::Guayaba => format!("api:{}", uuid::Uuid::new_v4()),
                    Api::Chatbase | Api::Agents => {
                        format!("conv_{}", uuid::Uuid::new_v4().simple())
                    }
                };
                self.map.insert(key(&client_id), None);
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
                let backend_id = self.map.entry(key(id)).or_insert(None).value().clone();
                Some(Resolved {
                    client_id: id.clone(),
                    backend_id,
                })
            }
        }
    }

    /// Notes the backend's id for a conversation once the backend revealed it.
    pub fn record(&self, account: &str, agent: &str, client_id: &str, backend_id: &str) {
        self.map.insert(
            (account.to_owned(), agent.to_owned(), client_id.to_owned()),
            Some(backend_id.to_owned()),
        );
    }
}
