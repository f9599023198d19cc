//! `agentgate demo-agent`: an echo backend speaking any of the chat APIs.
//!
//! It streams its answer word by word with small pauses, calls a `get_weather` tool when the
//! message asks about the weather, sends a `source-url` and a `data-demo` part (ui-message
//! backends) when it asks for "sources", remembers the turns of each conversation, and reports
//! `usage.credits` on its finish. It is the quick start's backend and the tests' reference.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use dashmap::DashMap;
use http::{Request, Response, StatusCode};
use http_body::{Body, Frame};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

use crate::apis::{Api, FinishIds};
use crate::formats::{
    Aggregate, EncodeOptions, Encoder, Event, FinishReason, Format, Json, SyncContext,
};

/// A running demo backend.
pub struct DemoAgent {
    api: Api,
    delay: Duration,
    /// conversation id → turns so far.
    turns: DashMap<String, u32>,
}

impl DemoAgent {
    pub fn new(api: Api, delay: Duration) -> Arc<Self> {
        Arc::new(DemoAgent {
            api,
            delay,
            turns: DashMap::new(),
        })
    }

    /// Binds `addr` and serves until the task is dropped. Returns the bound address.
    pub async fn spawn(self: Arc<Self>, addr: SocketAddr) -> std::io::Result<SocketAddr> {
        let listener = TcpListener::bind(addr).await?;
        let local = listener.local_addr()?;
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let agent = self.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req| {
                        let agent = agent.clone();
                        async move { Ok::<_, Infallible>(agent.handle(req).await) }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Ok(local)
    }

    async fn handle(self: Arc<Self>, req: Request<Incoming>) -> Response<DemoBody> {
        let path = req.uri().path().to_owned();
        if path == "/health" {
            return text(StatusCode::OK, "ok");
        }
        let wants_sse = req
            .headers()
            .get(http::header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.contains("text/event-stream"));
        let Ok(body) = req.into_body().collect().await else {
            return text(StatusCode::BAD_REQUEST, "unreadable body");
        };
        let Ok(body) = serde_json::from_slice::<Value>(&body.to_bytes()) else {
            return text(StatusCode::BAD_REQUEST, "malformed JSON");
        };
        // A backend called on its URL as it stands (ag-ui) answers on any path; one whose
        // path names no agent (the OpenAI APIs) on that path.
        let route = match crate::apis::match_chat(self.api, &path) {
            Some(route) => route,
            None if self.api.upstream_uses_base_path()
                || crate::apis::upstream_path(self.api, "demo") == path =>
            {
                crate::apis::ChatRoute {
                    agent_id: None,
                    api: None,
                    stream_path: true,
                }
            }
            None => return text(StatusCode::NOT_FOUND, "no such path"),
        };
        let agent_id = route.agent_id.unwrap_or_else(|| "demo".into());
        let message = self.api.demo_message(&body);
        let read = self.api.demo_read(&body, wants_sse, route.stream_path);
        let stream = read.stream;
        let conversation = read
            .conversation
            .unwrap_or_else(|| self.api.new_conversation_id());
        let turn = match self.api.demo_turn(&body) {
            Some(turn) => turn,
            None => {
                let mut t = self.turns.entry(conversation.clone()).or_insert(0);
                *t += 1;
                *t
            }
        };
        let mut options = self.api.demo_options(&body);
        // The answer's id continues the conversation next turn (openai-responses).
        let answer_id = self.api.demo_answer_id();
        if let Some(id) = &answer_id {
            self.turns.insert(id.clone(), turn);
            options.response_id = Some(id.as_str().into());
        }
        let events = answer(self.api, &message, &conversation, turn);
        if stream {
            self.stream(events, options)
        } else {
            let mut aggregate = Aggregate::default();
            events.iter().for_each(|e| aggregate.push(e));
            let ctx = SyncContext {
                message_id: answer_id,
                conversation_id: Some(conversation),
                agent_id: Some(agent_id),
                agent_name: Some("Demo echo".into()),
                ..Default::default()
            };
            let body = self.api.sync_body(&aggregate, &ctx).to_string();
            let mut r = Response::new(DemoBody::once(Bytes::from(body)));
            r.headers_mut().insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static("application/json"),
            );
            r
        }
    }

    fn stream(&self, events: Vec<Event<'static>>, options: EncodeOptions) -> Response<DemoBody> {
        let (tx, rx) = mpsc::channel(16);
        let format = self.api.default_format();
        let delay = self.delay;
        tokio::spawn(async move {
            let mut encoder = Encoder::new(format, options);
            let mut out = BytesMut::new();
            for event in &events {
                encoder.encode(event, &mut out);
                if out.is_empty() {
                    continue;
                }
                if tx.send(out.split().freeze()).await.is_err() {
                    return;
                }
                if !delay.is_zero() && matches!(event, Event::TextDelta { .. }) {
                    tokio::time::sleep(delay).await;
                }
            }
        });
        let mut r = Response::new(DemoBody::Channel(rx));
        r.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("text/event-stream"),
        );
        r
    }
}

/// The demo's answer to `message`, as canonical events.
pub fn answer(api: Api, message: &str, conversation: &str, turn: u32) -> Vec<Event<'static>> {
    let mut events = vec![Event::Start {
        message_id: Some(format!("demo-msg-{}", uuid::Uuid::new_v4().simple()).into()),
        conversation_id: Some(conversation.to_owned().into()),
    }];
    let mut credits = 1.0;
    let mut text = format!("Echo (turn {turn}): {message}");
    let weather = message.to_lowercase().contains("weather");
    if weather {
        let city = city_in(message);
        let input = json!({ "city": city }).to_string();
        let (a, b) = input.split_at(input.len() / 2);
        events.push(Event::StepStart);
        events.push(Event::ToolInputStart {
            call_id: "call-weather-1".into(),
            name: "get_weather".into(),
        });
        for part in [a, b] {
            events.push(Event::ToolInputDelta {
                call_id: "call-weather-1".into(),
                delta: part.to_owned().into(),
            });
        }
        events.push(Event::ToolInputAvailable {
            call_id: "call-weather-1".into(),
            name: "get_weather".into(),
            input: Json::from_value(&json!({ "city": city })),
        });
        events.push(Event::ToolOutput {
            call_id: "call-weather-1".into(),
            output: Json::from_value(&json!({ "forecast": "sunny", "temperature_c": 21 })),
        });
        events.push(Event::StepFinish);
        events.push(Event::StepStart);
        text = format!("The weather in {city} is sunny, 21 °C. {text}");
        credits = 2.0;
    }
    if message.to_lowercase().contains("sources") && api.default_format() == Format::UiMessage {
        // What a RAG backend on the AI SDK sends: a source and a data part (SPEC §8).
        events.push(Event::Part {
            ty: "source-url".into(),
            chunk: Json::from_value(&json!({
                "type": "source-url", "sourceId": "demo-source-1",
                "url": "https://example.com/agentgate", "title": "agentgate demo source"
            })),
        });
        events.push(Event::Part {
            ty: "data-demo".into(),
            chunk: Json::from_value(&json!({
                "type": "data-demo", "id": "demo-data-1", "data": { "turn": turn, "words": message.split_whitespace().count() }
            })),
        });
    }
    for word in text.split_inclusive(' ') {
        events.push(Event::TextDelta {
            id: "demo-text".into(),
            delta: word.to_owned().into(),
        });
    }
    events.push(Event::TextEnd {
        id: "demo-text".into(),
    });
    if weather {
        // The step opened for the answer after the tool call: every step opened is closed.
        events.push(Event::StepFinish);
    }
    let ids = FinishIds {
        conversation_id: conversation,
        message_id: "demo-run",
        user_message_id: "demo-user",
        user_id: None,
    };
    let metadata = api.finish_metadata(&ids, json!({ "credits": credits }));
    if let Some(m) = api.demo_metadata(conversation) {
        events.push(Event::Metadata {
            metadata: Json::from_value(&m),
        });
    }
    // Token counts as a model server reports them (the formats that carry them: OpenAI's).
    let usage = crate::formats::Usage {
        input_tokens: Some(demo_tokens(message)),
        output_tokens: Some(demo_tokens(&text)),
        ..crate::formats::Usage::credits(credits)
    };
    events.push(Event::Finish {
        reason: Some(FinishReason::Stop),
        usage: Some(usage),
        metadata: metadata.map(|m| Json::from_value(&m)),
    });
    events
}

/// The demo's token count of a text: one per word.
pub fn demo_tokens(text: &str) -> u64 {
    text.split_whitespace().count() as u64
}

fn city_in(message: &str) -> String {
    let words: Vec<&str> = message.split_whitespace().collect();
    words
        .windows(2)
        .find(|w| w[0].eq_ignore_ascii_case("in"))
        .map(|w| w[1].trim_matches(|c: char| !c.is_alphanumeric()).to_owned())
        .filter(|c| !c.is_empty())
        .unwrap_or_else(|| "Madrid".into())
}

fn text(status: StatusCode, body: &'static str) -> Response<DemoBody> {
    let mut r = Response::new(DemoBody::once(Bytes::from_static(body.as_bytes())));
    *r.status_mut() = status;
    r
}

/// A body fed by a channel (streams) or holding one chunk (sync answers).
pub enum DemoBody {
    Once(Option<Bytes>),
    Channel(mpsc::Receiver<Bytes>),
}

impl DemoBody {
    fn once(b: Bytes) -> Self {
        DemoBody::Once(Some(b))
    }
}

impl Body for DemoBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match self.get_mut() {
            DemoBody::Once(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            DemoBody::Channel(rx) => rx.poll_recv(cx).map(|b| b.map(|b| Ok(Frame::data(b)))),
        }
    }
}
