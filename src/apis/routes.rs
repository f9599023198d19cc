//! Each API's route table (method, path template, kind) and the router derived from it.

use http::Method;

use super::Api;

/// What a path of an API does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteKind {
    /// A chat; `stream_path`: always answers with a stream (`agents` `/chat/stream`).
    Chat { stream_path: bool },
    /// `GET` a conversation's messages.
    History,
    /// `GET` the models (agents) the key may use (the `openai` front).
    Models,
    /// `GET` one of them.
    Model,
    /// `GET` (list) / `POST` (create) conversations.
    Conversations,
    /// `PUT` (rename, archive) / `DELETE` one conversation.
    Conversation,
    /// `GET` the unread answers.
    Inbox,
    /// `POST` mark answers read.
    MarkRead,
    /// `GET` the sessions (guayaba's conversations).
    Sessions,
    /// `PATCH` / `DELETE` one session.
    Session,
    /// A team chat; `stream_path` as for [`RouteKind::Chat`].
    TeamChat { stream_path: bool },
}

/// One path of an API, relative to a front's prefix.
#[derive(Debug, Clone, Copy)]
pub struct RouteDef {
    pub methods: &'static [Method],
    /// A template: `{name}` is one path segment (percent-decoded); a template ending in `/`
    /// also matches the path without it.
    pub path: &'static str,
    pub kind: RouteKind,
    /// The API that serves this path when it is not the front's own: the `openai` front's
    /// chat paths are served by the openai-chat and openai-responses modules.
    pub via: Option<Api>,
}

impl RouteDef {
    pub const fn new(methods: &'static [Method], path: &'static str, kind: RouteKind) -> Self {
        RouteDef {
            methods,
            path,
            kind,
            via: None,
        }
    }

    /// The same path, served by `api`'s module ([`RouteDef::via`]).
    pub const fn via(mut self, api: Api) -> Self {
        self.via = Some(api);
        self
    }

    /// The parameter names of the template, in order.
    pub fn params(&self) -> impl Iterator<Item = &'static str> {
        self.path
            .split('/')
            .filter_map(|s| s.strip_prefix('{')?.strip_suffix('}'))
    }

    /// The template's parameters taken from `path`, percent-decoded; `None` if it does not
    /// match.
    pub fn captures(&self, path: &str) -> Option<Vec<String>> {
        let (template, path) = match self.path.strip_suffix('/') {
            Some(t) => (t, path.strip_suffix('/').unwrap_or(path)),
            None => (self.path, path),
        };
        let mut t = template.split('/');
        let mut p = path.split('/');
        let mut caps = Vec::new();
        loop {
            match (t.next(), p.next()) {
                (None, None) => return Some(caps),
                (Some(t), Some(p)) if t.starts_with('{') => caps.push(segment(p)?),
                (Some(t), Some(p)) if t == p => {}
                _ => return None,
            }
        }
    }

    /// The template with its parameters replaced by `values` (already encoded), in order.
    pub fn fill(&self, values: &[&str]) -> String {
        let mut values = values.iter();
        self.path
            .split('/')
            .map(|s| match s.starts_with('{') {
                true => values.next().copied().unwrap_or_default(),
                false => s,
            })
            .collect::<Vec<_>>()
            .join("/")
    }
}

/// A request that matched one of a front's chat paths.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatRoute {
    /// The agent the path names; `None` where the body names it (the OpenAI APIs' `model`).
    pub agent_id: Option<String>,
    /// The API that serves the path when it is not the front's own ([`RouteDef::via`]).
    pub api: Option<Api>,
    /// The path always streams (`agents` `/chat/stream`); others decide from the body or
    /// headers.
    pub stream_path: bool,
}

/// A request that matched one of a front's paths beyond chat (prefix already stripped).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// `openai`: `GET /v1/models`
    Models,
    /// `openai`: `GET /v1/models/{model}`
    Model { id: String },
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
        match self {
            Route::History { .. }
            | Route::Inbox { .. }
            | Route::Sessions { .. }
            | Route::Models
            | Route::Model { .. } => &[Method::GET],
            Route::Conversations { .. } => &[Method::GET, Method::POST],
            Route::Conversation { .. } => &[Method::PUT, Method::DELETE],
            Route::Session { .. } => &[Method::PATCH, Method::DELETE],
            Route::MarkRead { .. } | Route::TeamChat { .. } => &[Method::POST],
        }
    }

    fn of(kind: RouteKind, mut caps: Vec<String>) -> Option<Route> {
        if kind == RouteKind::Models {
            return Some(Route::Models);
        }
        let second = caps.get_mut(1).map(std::mem::take);
        let first = caps.into_iter().next()?;
        Some(match kind {
            RouteKind::Chat { .. } | RouteKind::Models => return None,
            RouteKind::Model => Route::Model { id: first },
            RouteKind::History => Route::History { agent_id: first },
            RouteKind::Conversations => Route::Conversations { agent_id: first },
            RouteKind::Conversation => Route::Conversation {
                agent_id: first,
                id: second?,
            },
            RouteKind::Inbox => Route::Inbox { agent_id: first },
            RouteKind::MarkRead => Route::MarkRead { agent_id: first },
            RouteKind::Sessions => Route::Sessions { agent_id: first },
            RouteKind::Session => Route::Session {
                agent_id: first,
                key: second?,
            },
            RouteKind::TeamChat { stream_path } => Route::TeamChat {
                team_id: first,
                stream_path,
            },
        })
    }
}

/// One path segment, percent-decoded; `None` if empty or not UTF-8.
pub fn segment(s: &str) -> Option<String> {
    let decoded = percent_encoding::percent_decode_str(s).decode_utf8().ok()?;
    (!decoded.is_empty() && !decoded.contains('/')).then(|| decoded.into_owned())
}

/// Matches `path` (already stripped of the front's prefix) against `api`'s chat paths.
pub fn match_chat(api: Api, path: &str) -> Option<ChatRoute> {
    api.routes().iter().find_map(|r| match r.kind {
        RouteKind::Chat { stream_path } => Some(ChatRoute {
            agent_id: r.captures(path)?.into_iter().next(),
            api: r.via,
            stream_path,
        }),
        _ => None,
    })
}

/// Matches `path` (already stripped of the front's prefix) against `api`'s other paths.
pub fn match_route(api: Api, path: &str) -> Option<Route> {
    api.routes()
        .iter()
        .find_map(|r| Route::of(r.kind, r.captures(path)?))
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

    #[test]
    fn chat_paths_of_every_api() {
        let c =
            |api, p| match_chat(api, p).map(|r| (r.agent_id.unwrap_or_default(), r.stream_path));
        let id = || "a b".to_string();
        assert_eq!(
            c(Api::Pharen, "/api/agents/a%20b/chat/"),
            Some((id(), false))
        );
        assert_eq!(
            c(Api::Pharen, "/api/agents/a%20b/chat"),
            Some((id(), false))
        );
        assert_eq!(c(Api::Pharen, "/api/agents/a%20b/chat//"), None);
        assert_eq!(
            c(Api::Chatbase, "/api/v2/agents/a%20b/chat"),
            Some((id(), false))
        );
        assert_eq!(c(Api::Chatbase, "/api/v2/agents/a%20b/chat/"), None);
        assert_eq!(
            c(Api::Agents, "/api/agents/a%20b/chat/stream"),
            Some((id(), true))
        );
        assert_eq!(
            c(Api::Agents, "/api/agents/a%20b/chat"),
            Some((id(), false))
        );
        assert_eq!(
            c(Api::Guayaba, "/api/v1/agents/a%20b/chat"),
            Some((id(), false))
        );
        assert_eq!(c(Api::Guayaba, "/api/v1/agents/a/b/chat"), None);
        assert_eq!(c(Api::Guayaba, "/api/v1/agents/a%2Fb/chat"), None);
        assert_eq!(c(Api::Guayaba, "/api/v1/agents//chat"), None);
    }

    #[test]
    fn fill_is_the_inverse_of_captures() {
        for api in Api::ALL {
            for route in api.routes() {
                let values: Vec<String> = route.params().map(|p| format!("v-{p}")).collect();
                let refs: Vec<&str> = values.iter().map(String::as_str).collect();
                let path = route.fill(&refs);
                assert_eq!(route.captures(&path), Some(values), "{}", route.path);
            }
        }
    }
}
