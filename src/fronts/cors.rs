//! CORS for the fronts (SPEC §11): which origins a front answers, the preflight answer and the
//! headers added to every answer to an allowed origin. No I/O: headers in, headers out.

use std::net::{IpAddr, SocketAddr};

use http::header::{
    ACCESS_CONTROL_ALLOW_HEADERS, ACCESS_CONTROL_ALLOW_METHODS, ACCESS_CONTROL_ALLOW_ORIGIN,
    ACCESS_CONTROL_EXPOSE_HEADERS, ACCESS_CONTROL_MAX_AGE, ACCESS_CONTROL_REQUEST_HEADERS,
    ACCESS_CONTROL_REQUEST_METHOD, ORIGIN, VARY,
};
use http::{HeaderMap, HeaderValue, Method};

/// The request headers a browser may send to a front (lower case).
pub const ALLOWED_HEADERS: [&str; 6] = [
    "authorization",
    "content-type",
    "accept",
    "idempotency-key",
    "x-request-id",
    "x-conversation-id",
];

/// More request headers a browser may send: those the official OpenAI SDKs add to every call
/// (the `openai` front), besides any `x-stainless-…` (the SDKs' telemetry headers).
pub const OPENAI_SDK_HEADERS: [&str; 3] = ["openai-organization", "openai-project", "openai-beta"];

/// Whether a browser may send the request header `name` (any case).
fn allowed_header(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    ALLOWED_HEADERS.contains(&lower.as_str())
        || OPENAI_SDK_HEADERS.contains(&lower.as_str())
        || lower.strip_prefix("x-stainless-").is_some_and(|rest| {
            !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

/// The methods the fronts answer.
pub const ALLOWED_METHODS: &str = "GET, POST, PUT, PATCH, DELETE";

/// The answer headers a browser script may read.
pub const EXPOSED_HEADERS: &str = "x-request-id, x-vercel-ai-ui-message-stream, ratelimit, \
     ratelimit-policy, retry-after, idempotent-replayed, x-conversation-id";

/// How long a browser may cache a preflight answer, in seconds.
pub const MAX_AGE_S: &str = "600";

/// Checks one `cors_origins` entry and returns it normalised: `*`, or `scheme://host[:port]`
/// (`http` or `https`, no path, no trailing slash), lower-cased as browsers send it.
pub fn normalize_origin(entry: &str) -> Result<String, String> {
    if entry == "*" {
        return Ok(entry.to_owned());
    }
    let lower = entry.to_ascii_lowercase();
    let Some(host) = lower
        .strip_prefix("http://")
        .or_else(|| lower.strip_prefix("https://"))
    else {
        return Err(format!(
            "`{entry}` is not an origin: write `*` or `scheme://host[:port]` (http or https)"
        ));
    };
    if host.is_empty() || host.contains(['/', '?', '#', '@', ' ']) {
        return Err(format!(
            "`{entry}` is not an origin: `scheme://host[:port]` without a path or trailing slash"
        ));
    }
    Ok(lower)
}

/// The admin listener's address: the console it serves may call the fronts. Its origin is
/// `http://HOST:PORT` with the listener's port, and as host its IP, `localhost` too when the
/// IP is a loopback one, or any host when it listens on every interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConsoleOrigin(pub SocketAddr);

impl ConsoleOrigin {
    fn matches(&self, origin: &str) -> bool {
        let Some(authority) = origin.strip_prefix("http://") else {
            return false;
        };
        let Some((host, port)) = authority.rsplit_once(':') else {
            return false;
        };
        if port.parse::<u16>() != Ok(self.0.port()) {
            return false;
        }
        let ip = self.0.ip();
        if ip.is_unspecified() {
            return true;
        }
        let host = host.trim_start_matches('[').trim_end_matches(']');
        match host.parse::<IpAddr>() {
            Ok(h) => h == ip,
            Err(_) => ip.is_loopback() && host.eq_ignore_ascii_case("localhost"),
        }
    }
}

/// The CORS decision for one request: the origin to answer, if it is allowed.
#[derive(Debug, Clone)]
pub struct Cors {
    origin: Option<HeaderValue>,
}

impl Cors {
    /// Whether the request's `Origin` is allowed by `origins` (a front's `cors_origins`,
    /// normalised) or is the console's.
    pub fn new(origins: &[String], console: Option<ConsoleOrigin>, headers: &HeaderMap) -> Cors {
        let origin = headers.get(ORIGIN).filter(|value| {
            let Ok(text) = value.to_str() else {
                return false;
            };
            let text = text.to_ascii_lowercase();
            origins.iter().any(|o| o == "*" || *o == text)
                || console.is_some_and(|c| c.matches(&text))
        });
        Cors {
            origin: origin.cloned(),
        }
    }

    /// The preflight answer's headers, when `method`/`headers` are a preflight (`OPTIONS`
    /// with `Access-Control-Request-Method`) from an allowed origin.
    pub fn preflight(&self, method: &Method, headers: &HeaderMap) -> Option<HeaderMap> {
        let origin = self.origin.as_ref()?;
        if method != Method::OPTIONS || !headers.contains_key(ACCESS_CONTROL_REQUEST_METHOD) {
            return None;
        }
        let mut out = HeaderMap::new();
        out.insert(ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
        out.insert(
            ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static(ALLOWED_METHODS),
        );
        let asked: Vec<String> = headers
            .get_all(ACCESS_CONTROL_REQUEST_HEADERS)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .filter(|name| allowed_header(name))
            .map(str::to_ascii_lowercase)
            .collect();
        if !asked.is_empty() {
            if let Ok(value) = HeaderValue::from_str(&asked.join(", ")) {
                out.insert(ACCESS_CONTROL_ALLOW_HEADERS, value);
            }
        }
        out.insert(ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static(MAX_AGE_S));
        out.insert(VARY, HeaderValue::from_static("Origin"));
        Some(out)
    }

    /// Adds the answer headers to `headers` when the origin is allowed.
    pub fn apply(&self, headers: &mut HeaderMap) {
        let Some(origin) = &self.origin else {
            return;
        };
        headers.insert(ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
        headers.insert(
            ACCESS_CONTROL_EXPOSE_HEADERS,
            HeaderValue::from_static(EXPOSED_HEADERS),
        );
        headers.append(VARY, HeaderValue::from_static("Origin"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(origin: &str, extra: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(ORIGIN, HeaderValue::from_str(origin).expect("origin"));
        for (name, value) in extra {
            h.insert(
                http::HeaderName::from_bytes(name.as_bytes()).expect("name"),
                HeaderValue::from_str(value).expect("value"),
            );
        }
        h
    }

    #[test]
    fn origins_are_checked_and_normalised() {
        assert_eq!(normalize_origin("*").as_deref(), Ok("*"));
        assert_eq!(
            normalize_origin("HTTPS://App.Example.com:8443").as_deref(),
            Ok("https://app.example.com:8443")
        );
        assert!(normalize_origin("app.example.com").is_err());
        assert!(normalize_origin("https://app.example.com/").is_err());
        assert!(normalize_origin("ftp://x").is_err());
        assert!(normalize_origin("https://").is_err());
    }

    #[test]
    fn preflight_allows_only_listed_headers() {
        let origins = vec!["https://app.example.com".to_owned()];
        let h = request(
            "https://app.example.com",
            &[
                ("access-control-request-method", "POST"),
                (
                    "access-control-request-headers",
                    "Content-Type, authorization, x-evil",
                ),
            ],
        );
        let cors = Cors::new(&origins, None, &h);
        let out = cors.preflight(&Method::OPTIONS, &h).expect("a preflight");
        assert_eq!(out[ACCESS_CONTROL_ALLOW_ORIGIN], "https://app.example.com");
        assert_eq!(
            out[ACCESS_CONTROL_ALLOW_HEADERS],
            "content-type, authorization"
        );
        assert_eq!(out[ACCESS_CONTROL_MAX_AGE], "600");
        assert_eq!(out[VARY], "Origin");
        // Not a preflight: a plain OPTIONS, or another method.
        let plain = request("https://app.example.com", &[]);
        assert!(cors.preflight(&Method::OPTIONS, &plain).is_none());
        assert!(cors.preflight(&Method::POST, &h).is_none());
    }

    #[test]
    fn other_origins_get_nothing() {
        let origins = vec!["https://app.example.com".to_owned()];
        let h = request(
            "https://evil.example.com",
            &[("access-control-request-method", "POST")],
        );
        let cors = Cors::new(&origins, None, &h);
        assert!(cors.preflight(&Method::OPTIONS, &h).is_none());
        let mut out = HeaderMap::new();
        cors.apply(&mut out);
        assert!(out.is_empty());
        // No cors_origins: nobody.
        let cors = Cors::new(&[], None, &request("https://app.example.com", &[]));
        cors.apply(&mut out);
        assert!(out.is_empty());
    }

    #[test]
    fn the_openai_sdks_headers_are_allowed_and_nothing_else_is() {
        let mut h = request("http://localhost:3000", &[]);
        h.insert(
            ACCESS_CONTROL_REQUEST_METHOD,
            HeaderValue::from_static("POST"),
        );
        h.insert(
            ACCESS_CONTROL_REQUEST_HEADERS,
            HeaderValue::from_static(
                "authorization,content-type,x-stainless-os,X-Stainless-Retry-Count,\
                 openai-project,x-stainless-,x-evil,cookie",
            ),
        );
        let cors = Cors::new(&["*".to_owned()], None, &h);
        let out = cors.preflight(&Method::OPTIONS, &h).expect("a preflight");
        assert_eq!(
            out[ACCESS_CONTROL_ALLOW_HEADERS],
            "authorization, content-type, x-stainless-os, x-stainless-retry-count, openai-project"
        );
    }

    #[test]
    fn wildcard_echoes_the_origin() {
        let h = request("http://localhost:3000", &[]);
        let cors = Cors::new(&["*".to_owned()], None, &h);
        let mut out = HeaderMap::new();
        cors.apply(&mut out);
        assert_eq!(out[ACCESS_CONTROL_ALLOW_ORIGIN], "http://localhost:3000");
        assert!(out[ACCESS_CONTROL_EXPOSE_HEADERS]
            .to_str()
            .expect("ascii")
            .contains("x-request-id"));
    }

    #[test]
    fn the_console_origin() {
        let loopback = ConsoleOrigin("127.0.0.1:9090".parse().expect("addr"));
        assert!(loopback.matches("http://127.0.0.1:9090"));
        assert!(loopback.matches("http://localhost:9090"));
        assert!(!loopback.matches("http://127.0.0.1:9091"));
        assert!(!loopback.matches("https://127.0.0.1:9090"));
        assert!(!loopback.matches("http://evil.example:9090"));
        let any = ConsoleOrigin("0.0.0.0:9090".parse().expect("addr"));
        assert!(any.matches("http://gateway.internal:9090"));
        let v6 = ConsoleOrigin("[::1]:9090".parse().expect("addr"));
        assert!(v6.matches("http://[::1]:9090"));
        let private = ConsoleOrigin("10.0.0.5:9090".parse().expect("addr"));
        assert!(!private.matches("http://localhost:9090"));
    }
}
