//! Every API's route table drives the router and the OpenAPI document.

use super::*;
use crate::config::FrontConfig;

fn front(api: Api, prefix: &str) -> FrontConfig {
    FrontConfig {
        api,
        prefix: prefix.into(),
        listen: ([127, 0, 0, 1], 0).into(),
        format: api.default_format(),
        event_lines: false,
        tools_as_text: false,
        require_key: true,
        cors_origins: Vec::new(),
    }
}

#[test]
fn every_route_is_matched_by_the_router_and_documented_in_openapi() {
    for api in Api::fronts() {
        let doc = crate::openapi::document(&front(api, "/p"));
        let routes = api.routes();
        assert!(
            routes
                .iter()
                .any(|r| matches!(r.kind, RouteKind::Chat { .. })),
            "{api} has no chat route"
        );
        for route in routes {
            // A path with every parameter filled in (one needing percent-decoding) is matched
            // as the route's kind, with the parameters decoded.
            let values: Vec<String> = route.params().map(|p| format!("{p}%3A1")).collect();
            let refs: Vec<&str> = values.iter().map(String::as_str).collect();
            let path = route.fill(&refs);
            let decoded: Vec<String> = route.params().map(|p| format!("{p}:1")).collect();
            match route.kind {
                RouteKind::Chat { stream_path } => {
                    let m = match_chat(api, &path).unwrap_or_else(|| panic!("{api} {path}"));
                    assert_eq!(m.stream_path, stream_path, "{api} {path}");
                    assert_eq!(m.agent_id, decoded.first().cloned(), "{api} {path}");
                    assert_eq!(m.api, route.via, "{api} {path}");
                    assert_eq!(match_route(api, &path), None, "{api} {path}");
                }
                _ => {
                    let m = match_route(api, &path).unwrap_or_else(|| panic!("{api} {path}"));
                    assert_eq!(m.methods(), route.methods, "{api} {path}");
                    assert_eq!(match_chat(api, &path), None, "{api} {path}");
                }
            }
            // … and documented under the front's prefix, for each of its methods.
            let item = &doc["paths"][format!("/p{}", route.path)];
            for method in route.methods {
                let op = &item[method.as_str().to_ascii_lowercase()];
                assert!(op.is_object(), "{api} {method} {} undocumented", route.path);
                for param in route.params() {
                    let params = op["parameters"].as_array().cloned().unwrap_or_default();
                    assert!(
                        params
                            .iter()
                            .any(|p| p["name"] == param && p["in"] == "path"),
                        "{api} {method} {}: no `{param}` parameter",
                        route.path
                    );
                }
            }
        }
        // Nothing documented that the table does not hold (but the document itself).
        let documented = doc["paths"].as_object().map_or(0, |p| p.len());
        let mut paths: Vec<&str> = routes.iter().map(|r| r.path).collect();
        paths.dedup();
        assert_eq!(documented, paths.len() + 1, "{api}");
    }
}

#[test]
fn every_api_is_named_parsed_and_registered_once() {
    for api in Api::ALL {
        assert_eq!(api.as_str().parse::<Api>(), Ok(api));
        assert_eq!(api.spec().name(), api.to_string());
        assert_eq!(
            Api::ALL
                .iter()
                .filter(|a| a.as_str() == api.as_str())
                .count(),
            1
        );
    }
    let err = "nope".parse::<Api>().unwrap_err();
    assert!(
        err.contains(
            "expected pharen, chatbase, agents, guayaba, ag-ui, openai-chat, openai-responses \
             or openai"
        ),
        "{err}"
    );
}

#[test]
fn upstream_paths_are_the_streaming_chat_routes() {
    assert_eq!(upstream_path(Api::Pharen, "a"), "/api/agents/a/chat/");
    assert_eq!(upstream_path(Api::Chatbase, "a"), "/api/v2/agents/a/chat");
    assert_eq!(upstream_path(Api::Agents, "a"), "/api/agents/a/chat/stream");
    assert_eq!(upstream_path(Api::Guayaba, "a"), "/api/v1/agents/a/chat");
}
