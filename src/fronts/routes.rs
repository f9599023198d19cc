//! The paths of each API beyond chat (SPEC §1 "The rest of each API", §7): history,
//! conversations, inbox and team chat on `agents`; sessions on `guayaba`.

use super::Api;

/// A request that matched one of those paths (prefix already stripped).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// `agents`: `GET /api/agents/{id}/history`
    History { agent_id: String },
    /// `agents`: `GET`/`POST /api/agents/{id}/conversations`
    Conversations { agent_id: String },
    /// `agents`: `PUT`/`DELETE /api/agents/{id}/conversations/{conv_id}`
    Conversation { agent_id: String, id: String },
    /// `agents`: `GET /api/agents/{id}/inbox`
    Inbox { agent_id: String },
    /// `agents`: `POST /api/agents/{id}/mark-read`
    MarkRead { agent_id: String },
    /// `guayaba`: `GET /api/v1/agents/{id}/sessions`
    Sessions { agent_id: String },
    /// `guayaba`: `PATCH`/`DELETE /api/v1/agents/{id}/sessions/{sessionKey}`
    Session { agent_id: String, key: String },
    /// `agents`: `POST /api/teams/{id}/chat` and `/chat/stream`
    TeamChat { team_id: String, stream_path: bool },
}

impl Route {
    /// The methods the route answers (for 405 and `Allow`).
    pub fn methods(&self) -> &'static [http::Method] {
        use http::Method;
        match self {
            Route::History { .. } | Route::Inbox { .. } | Route::Sessions { .. } => &[Method::GET],
            Route::Conversations { .. } => &[Method::GET, Method::POST],
            Route::Conversation { .. } => &[Method::PUT, Method::DELETE],
            Route::Session { .. } => &[Method::PATCH, Method::DELETE],
            Route::MarkRead { .. } | Route::TeamChat { .. } => &[Method::POST],
        }
    }
}

/// One path segment, percent-decoded; `None` if empty or not UTF-8.
pub(crate) fn segment(s: &str) -> Option<String> {
    let decoded = percent_encoding::percent_decode_str(s).decode_utf8().ok()?;
    (!decoded.is_empty() && !decoded.contains('/')).then(|| decoded.into_owned())
}

/// Matches `path` (already stripped of the front's prefix) against `api`'s other paths.
pub fn match_route(api: Api, path: &str) -> Option<Route> {
    match api {
        Api::Agents => {
            if let Some(rest) = path.strip_prefix("/api/teams/") {
                let (id, stream_path) = match rest.strip_suffix("/chat/stream") {
                    Some(id) => (id, true),
                    None => (rest.strip_suffix("/chat")?, false),
                };
                return Some(Route::TeamChat {
                    team_id: segment(id)?,
                    stream_path,
                });
            }
            let rest = path.strip_prefix("/api/agents/")?;
            let (id, rest) = rest.split_once('/')?;
            let agent_id = segment(id)?;
            Some(match rest {
                "history" => Route::History { agent_id },
                "conversations" => Route::Conversations { agent_id },
                "inbox" => Route::Inbox { agent_id },
                "mark-read" => Route::MarkRead { agent_id },
                _ => Route::Conversation {
                    agent_id,
                    id: segment(rest.strip_prefix("conversations/")?)?,
                },
            })
        }
        Api::Guayaba => {
            let rest = path.strip_prefix("/api/v1/agents/")?;
            let (id, rest) = rest.split_once('/')?;
            let agent_id = segment(id)?;
            match rest {
                "sessions" => Some(Route::Sessions { agent_id }),
                _ => Some(Route::Session {
                    agent_id,
                    key: segment(rest.strip_prefix("sessions/")?)?,
                }),
            }
        }
        Api::Pharen | Api::Chatbase => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_of_the_agents_and_guayaba_apis() {
        let r = |api, p| match_route(api, p);
        assert_eq!(
            r(Api::Agents, "/api/agents/a1/history"),
            Some(Route::History {
                agent_id: "a1".into()
            })
        );
        assert_eq!(
            r(Api::Agents, "/api/agents/a1/conversations/conv_1"),
            Some(Route::Conversation {
                agent_id: "a1".into(),
                id: "conv_1".into()
            })
        );
        assert_eq!(
            r(Api::Agents, "/api/teams/research/chat/stream"),
            Some(Route::TeamChat {
                team_id: "research".into(),
                stream_path: true
            })
        );
        assert_eq!(
            r(Api::Guayaba, "/api/v1/agents/a1/sessions/api%3Ax"),
            Some(Route::Session {
                agent_id: "a1".into(),
                key: "api:x".into()
            })
        );
        assert_eq!(r(Api::Agents, "/api/agents/a1/conversations/a/b"), None);
        assert_eq!(r(Api::Agents, "/api/agents/a1/chat"), None);
        assert_eq!(r(Api::Pharen, "/api/agents/a1/history"), None);
        assert_eq!(r(Api::Guayaba, "/api/v1/agents/a1/sessions/"), None);
    }
}
