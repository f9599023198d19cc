//! The `openai` front's models (SPEC §10): `GET /v1/models` lists the agents the key may use as
//! OpenAI models, `GET /v1/models/{model}` one of them (by id or name).

use bytes::Bytes;
use http::header::{HeaderValue, AUTHORIZATION};
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use serde_json::{json, Value};

use super::error::GatewayError;
use super::request::Ctx;
use super::response::{json_response, GatewayBody};
use super::snapshot::Snapshot;
use super::Gateway;
use crate::config::{AgentConfig, FrontConfig};
use crate::fronts::{ApiError, Route};

impl Gateway {
    /// Serves the model list or one model: the key must hold the chat scope (`agents:run`).
    pub(super) async fn models(
        &self,
        snap: &Snapshot,
        front: &FrontConfig,
        route: Route,
        req: Request<Incoming>,
        ctx: &mut Ctx,
    ) -> Result<Response<GatewayBody>, GatewayError> {
        if req.method() != Method::GET && req.method() != Method::HEAD {
            return Err(GatewayError::Invalid(
                ApiError::new(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "method_not_allowed",
                    "use GET",
                )
                .with_header(http::header::ALLOW, HeaderValue::from_static("GET, HEAD")),
            ));
        }
        let key = match front.require_key {
            true => {
                let authorization = req
                    .headers()
                    .get(AUTHORIZATION)
                    .and_then(|v| v.to_str().ok());
                Some(self.policy.authenticate(front.api, authorization).await?)
            }
            false => None,
        };
        let mut visible = snap
            .config()
            .agents()
            .iter()
            .filter(|a| key.as_ref().is_none_or(|k| k.may_access(&a.id)));
        let body = match route {
            Route::Model { id } => {
                let id = snap.model_agent(&id);
                let agent = visible.find(|a| a.id == id).ok_or_else(|| {
                    GatewayError::Invalid(ApiError::agent_not_found(front.api, false))
                })?;
                ctx.agent = snap.agent(&agent.id).map(|a| a.label.clone());
                model(agent, snap.loaded_at)
            }
            _ => {
                let data: Vec<Value> = visible.map(|a| model(a, snap.loaded_at)).collect();
                json!({ "object": "list", "data": data })
            }
        };
        Ok(json_response(StatusCode::OK, Bytes::from(body.to_string())))
    }
}

/// An agent as OpenAI's model object.
fn model(agent: &AgentConfig, created: u64) -> Value {
    json!({
        "id": agent.id,
        "object": "model",
        "created": created,
        "owned_by": "agentgate",
        "name": agent.name,
    })
}
