use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::*;
use crate::formats::Format;
use crate::fronts::Api;

const BASE: &str = "/etc/agentgate";
const ADMIN_TOKEN: &str = "admin-token-0123456789";

fn env(name: &str) -> Option<String> {
    match name {
        "TOKEN" => Some("tok-123".into()),
        "ADMIN_TOKEN" => Some(ADMIN_TOKEN.into()),
        "PGPASSWORD" => Some("pg-pass".into()),
        "EMPTY" => Some(String::new()),
        _ => None,
    }
}

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::parse_with(text, "t.toml", Path::new(BASE), &env)
}

fn ok(text: &str) -> Config {
    match parse(text) {
        Ok(config) => config,
        Err(e) => panic!("unexpected error:\n{e}"),
    }
}

/// The error lines of an invalid config.
fn errors(text: &str) -> Vec<String> {
    match parse(text) {
        Ok(config) => panic!("accepted: {config:?}"),
        Err(e) => e.to_string().lines().map(str::to_owned).collect(),
    }
}

/// The single error of an invalid config.
fn error(text: &str) -> String {
    let mut all = errors(text);
    assert_eq!(all.len(), 1, "{all:#?}");
    all.remove(0)
}

fn addr(text: &str) -> SocketAddr {
    text.parse().expect("test address")
}

const AGENT: &str = "[[agent]]\nid = \"a\"\nupstream = \"demo\"\nupstream_api = \"agents\"\n";

// ----- defaults -------------------------------------------------------------------------------

#[test]
fn empty_file_gets_every_default() {
    let config = ok("");
    let server = config.server();
    assert_eq!(server.listen, addr("127.0.0.1:8080"));
    assert!(server.admin.is_none());
    assert_eq!(server.drain_timeout, Duration::from_secs(30));
    assert_eq!(server.max_body_bytes, 1_048_576);
    assert_eq!(server.log_format, LogFormat::Text);
    assert!(server.tls.is_none());

    let store = config.store();
    assert_eq!(
        store.url,
        StoreUrl::Sqlite(PathBuf::from("/etc/agentgate/data/agentgate.db"))
    );
    assert_eq!(store.reservation_timeout, Duration::from_secs(900));
    assert_eq!(store.lease_credits, 0.0);
    assert_eq!(store.lease_timeout, Duration::from_secs(30));
    assert_eq!(store.idempotency_ttl, Duration::from_secs(86_400));

    let rate_limit = config.rate_limit();
    assert!(rate_limit.redis_url.is_none());
    assert_eq!(rate_limit.key_prefix, "agentgate");
    assert_eq!(rate_limit.key_defaults, KeyLimits::default());

    assert!(config.fronts().is_empty());
    assert!(config.agents().is_empty());
    assert!(config.teams().is_empty());
    assert_eq!(config.listeners(), vec![addr("127.0.0.1:8080")]);
    assert_eq!(config.base_dir(), Path::new(BASE));
}

#[test]
fn agent_defaults() {
    let config = ok(AGENT);
    let agent = config.agent("a").expect("agent a");
    assert_eq!(agent.name, "a");
    assert_eq!(agent.upstream, Upstream::Demo);
    assert_eq!(agent.upstream_api, Api::Agents);
    assert_eq!(agent.upstream_agent_id, "a");
    assert!(agent.upstream_token.is_none());
    assert_eq!(
        agent.credits,
        AgentCredits {
            per_message: 1.0,
            max_usage: 10.0,
            per_1k_output_chars: 0.0,
            per_1k_input_tokens: 0.0,
            per_1k_output_tokens: 0.0,
        }
    );
    assert_eq!(agent.history_messages, 50);
    assert_eq!(agent.credits.reservation(), 11.0);
    assert!(agent.rate.is_none());
    assert!(agent.max_concurrent_streams.is_none());
    assert_eq!(
        agent.timeouts,
        UpstreamTimeouts {
            connect: Duration::from_millis(2000),
            first_byte: Duration::from_millis(30_000),
            idle: Duration::from_millis(30_000),
        }
    );
    assert!(agent.enabled);
    assert!(agent.record);
    assert!(agent.health_check.is_none());
    assert!(agent.uuid().is_none());
}

#[test]
fn front_defaults_follow_the_api() {
    let text = "[[front]]\napi = \"pharen\"\nprefix = \"/p\"\n\
                [[front]]\napi = \"agents\"\nprefix = \"/a\"\n\
                [[front]]\napi = \"guayaba\"\n";
    let config = ok(text);
    let formats: Vec<_> = config.fronts().iter().map(|f| f.format).collect();
    assert_eq!(
        formats,
        [Format::UiMessage, Format::TextDone, Format::SessionDelta]
    );
    let guayaba = &config.fronts()[2];
    assert_eq!(guayaba.prefix, "");
    assert_eq!(guayaba.listen, addr("127.0.0.1:8080"));
    assert!(!guayaba.event_lines && !guayaba.tools_as_text);
}

#[test]
fn team_defaults() {
    let config = ok(&format!("{AGENT}[[team]]\nid = \"t\"\nmembers = [\"a\"]\n"));
    let team = config.team("t").expect("team t");
    assert_eq!(team.name, "t");
    assert_eq!(team.members, ["a"]);
    assert_eq!(team.modes, ["brainstorm"]);
    assert_eq!(team.default_mode(), "brainstorm");
    assert!(team.summarizer.is_none());
    assert!(team.member_timeout.is_none());
}

// ----- every key ------------------------------------------------------------------------------

const FULL: &str = r#"
[server]
listen = "0.0.0.0:8443"
admin_listen = "127.0.0.1:9090"
admin_token = "${ADMIN_TOKEN}"
drain_timeout_s = 5
max_body_bytes = 2048
log_format = "json"
[server.tls]
cert = "tls/cert.pem"
key = "/abs/key.pem"

[store]
url = "postgres://agentgate:${PGPASSWORD}@db:5432/agentgate"
reservation_timeout_s = 60
lease_credits = 50
lease_timeout_s = 10
idempotency_ttl_s = 3600

[rate_limit]
redis_url = "redis://cache:6379"
key_prefix = "ag-prod"
key_rate_per_second = 2.5
key_max_streams = 4

[[front]]
api = "pharen"
prefix = "/pharen"
format = "ui-message"
event_lines = true

[[front]]
api = "agents"
prefix = "/agents"
listen = "0.0.0.0:8444"
tools_as_text = true

[[agent]]
id = "7d3f0c2e-8f5a-4b1e-9a51-2f6c1b7e9d10"
name = "Support"
upstream = "https://support.example.com/base/"
upstream_api = "pharen"
upstream_agent_id = "11111111-2222-4333-8444-555555555555"
upstream_token = "${TOKEN}"
credits_per_message = 2
max_usage_credits = 5.5
credits_per_1k_output_chars = 0.25
rate_per_second = 50.0
rate_burst = 100
max_concurrent_streams = 64
connect_timeout_ms = 500
first_byte_timeout_ms = 10000
idle_timeout_ms = 15000
enabled = false
record = false
health_check = "/health"

[[agent]]
id = "writer"
upstream = "http://127.0.0.1:7001"
upstream_api = "chatbase"

[[team]]
id = "research"
name = "Research team"
members = ["writer", "7d3f0c2e-8f5a-4b1e-9a51-2f6c1b7e9d10"]
modes = ["debate", "brainstorm"]
summarizer = "writer"
member_timeout_ms = 60000
"#;

#[test]
fn every_key_is_read() {
    let config = ok(FULL);

    let server = config.server();
    assert_eq!(server.listen, addr("0.0.0.0:8443"));
    let admin = server.admin.as_ref().expect("admin");
    assert_eq!(admin.listen, addr("127.0.0.1:9090"));
    assert_eq!(admin.token.expose(), ADMIN_TOKEN);
    assert_eq!(server.drain_timeout, Duration::from_secs(5));
    assert_eq!(server.max_body_bytes, 2048);
    assert_eq!(server.log_format, LogFormat::Json);
    assert_eq!(
        server.tls,
        Some(TlsConfig {
            cert: PathBuf::from("/etc/agentgate/tls/cert.pem"),
            key: PathBuf::from("/abs/key.pem"),
        })
    );

    let store = config.store();
    assert!(matches!(&store.url, StoreUrl::Postgres(url)
        if url.expose() == "postgres://agentgate:pg-pass@db:5432/agentgate"));
    assert_eq!(store.reservation_timeout, Duration::from_secs(60));
    assert_eq!(store.lease_credits, 50.0);
    assert_eq!(store.lease_timeout, Duration::from_secs(10));
    assert_eq!(store.idempotency_ttl, Duration::from_secs(3600));

    let rate_limit = config.rate_limit();
    assert_eq!(
        rate_limit.redis_url.as_ref().map(Secret::expose),
        Some("redis://cache:6379")
    );
    assert_eq!(rate_limit.key_prefix, "ag-prod");
    assert_eq!(
        rate_limit.key_defaults,
        KeyLimits {
            rate: Some(Rate {
                per_second: 2.5,
                burst: 3
            }),
            max_streams: Some(4),
        }
    );

    let fronts = config.fronts();
    assert_eq!(
        fronts[0],
        FrontConfig {
            api: Api::Pharen,
            prefix: "/pharen".into(),
            listen: addr("0.0.0.0:8443"),
            format: Format::UiMessage,
            event_lines: true,
            tools_as_text: false,
            require_key: true,
            cors_origins: Vec::new(),
        }
    );
    assert_eq!(fronts[1].listen, addr("0.0.0.0:8444"));
    assert!(fronts[1].tools_as_text);
    assert_eq!(
        config.listeners(),
        vec![addr("0.0.0.0:8443"), addr("0.0.0.0:8444")]
    );
    let on_main: Vec<_> = config.fronts_on(addr("0.0.0.0:8443")).collect();
    assert_eq!(on_main, [&fronts[0]]);

    let agent = config
        .agent("7d3f0c2e-8f5a-4b1e-9a51-2f6c1b7e9d10")
        .expect("agent");
    assert!(agent.uuid().is_some());
    assert_eq!(agent.name, "Support");
    match &agent.upstream {
        Upstream::Http(uri) => assert_eq!(uri.to_string(), "https://support.example.com/base"),
        Upstream::Demo => panic!("demo upstream"),
    }
    assert_eq!(agent.upstream_api, Api::Pharen);
    assert_eq!(
        agent.upstream_agent_id,
        "11111111-2222-4333-8444-555555555555"
    );
    assert_eq!(
        agent.upstream_token.as_ref().map(Secret::expose),
        Some("tok-123")
    );
    assert_eq!(
        agent.credits,
        AgentCredits {
            per_message: 2.0,
            max_usage: 5.5,
            per_1k_output_chars: 0.25,
            per_1k_input_tokens: 0.0,
            per_1k_output_tokens: 0.0,
        }
    );
    assert_eq!(
        agent.rate,
        Some(Rate {
            per_second: 50.0,
            burst: 100
        })
    );
    assert_eq!(agent.max_concurrent_streams, Some(64));
    assert_eq!(agent.timeouts.connect, Duration::from_millis(500));
    assert_eq!(agent.timeouts.first_byte, Duration::from_secs(10));
    assert_eq!(agent.timeouts.idle, Duration::from_secs(15));
    assert!(!agent.enabled);
    assert!(!agent.record);
    assert_eq!(agent.health_check.as_deref(), Some("/health"));

    let team = config.team("research").expect("team");
    assert_eq!(team.name, "Research team");
    assert_eq!(
        team.members,
        ["writer", "7d3f0c2e-8f5a-4b1e-9a51-2f6c1b7e9d10"]
    );
    assert_eq!(team.default_mode(), "debate");
    assert!(team.has_mode("brainstorm") && !team.has_mode("vote"));
    assert_eq!(team.summarizer.as_deref(), Some("writer"));
    assert_eq!(team.member_timeout, Some(Duration::from_secs(60)));

    assert!(config.agent("nobody").is_none());
    assert!(config.team("nobody").is_none());
}

#[test]
fn debug_redacts_secrets() {
    let text = FULL.replace("redis://cache:6379", "redis://:redis-pass@cache:6379");
    let debug = format!("{:?}", ok(&text));
    for secret in [ADMIN_TOKEN, "tok-123", "pg-pass", "redis-pass"] {
        assert!(!debug.contains(secret), "{secret} leaked in {debug}");
    }
    assert!(debug.contains("Secret(***)"));
}

// ----- TOML errors ----------------------------------------------------------------------------

#[test]
fn syntax_error() {
    assert_eq!(
        error("[server]\nlisten = \"127.0.0.1:1\n"),
        "t.toml:2:22: invalid basic string, expected `\"`"
    );
    assert_eq!(
        error("[server\n"),
        "t.toml:1:8: unclosed table, expected `]`"
    );
    assert!(
        error("[server]\ndrain_timeout_s = 1\ndrain_timeout_s = 2\n")
            .starts_with("t.toml:3:1: duplicate key")
    );
}

#[test]
fn unknown_keys() {
    assert!(error("[server]\nlisten = \"127.0.0.1:1\"\nbogus = 1\n")
        .starts_with("t.toml:3:1: unknown field `bogus`, expected one of `listen`"));
    assert!(error("x = 1\n").starts_with("t.toml:1:1: unknown field `x`"));
    assert!(
        error(&format!("{AGENT}token = \"x\"\n")).starts_with("t.toml:5:1: unknown field `token`")
    );
}

#[test]
fn wrong_types() {
    assert_eq!(
        error("[server]\ndrain_timeout_s = \"x\"\n"),
        "t.toml:2:19: invalid type: string \"x\", expected u64"
    );
    assert_eq!(
        error(&format!("{AGENT}rate_burst = -1\n")),
        "t.toml:5:14: invalid value: integer `-1`, expected u32"
    );
    assert_eq!(
        error(&format!("{AGENT}enabled = \"yes\"\n")),
        "t.toml:5:11: invalid type: string \"yes\", expected a boolean"
    );
}

#[test]
fn bad_enum_values() {
    assert_eq!(
        error("\n[[front]]\napi = \"soap\"\n"),
        "t.toml:3:7: unknown API `soap` (expected pharen, chatbase, agents, guayaba, ag-ui, \
         openai-chat, openai-responses or openai)"
    );
    assert_eq!(
        error(&AGENT.replace("upstream_api = \"agents\"", "upstream_api = \"openai\"")),
        "t.toml:2:6: upstream_api: `openai` is a front only; a backend speaks one of: pharen, \
         chatbase, agents, guayaba, ag-ui, openai-chat, openai-responses"
    );
    assert_eq!(
        error("[[front]]\napi = \"agents\"\nformat = \"xml\"\n"),
        "t.toml:3:10: unknown stream format `xml` (expected ui-message, session-delta, text-done, \
         ag-ui, openai-chat or openai-responses)"
    );
    assert_eq!(
        error("[server]\nlog_format = \"xml\"\n"),
        "t.toml:2:14: unknown variant `xml`, expected `text` or `json`"
    );
}

#[test]
fn missing_required_keys_point_at_their_table() {
    let text = format!("{AGENT}\n[[agent]]\nid = \"b\"\nupstream_api = \"agents\"\n");
    assert_eq!(error(&text), "t.toml:6:1: missing field `upstream`");
    assert_eq!(
        error("[server.tls]\ncert = \"c.pem\"\n"),
        "t.toml:1:1: missing field `key`"
    );
}

// ----- semantic errors ------------------------------------------------------------------------

#[test]
fn duplicate_agent_id() {
    let text = format!("{AGENT}{AGENT}");
    assert_eq!(
        error(&text),
        "t.toml:6:6: id: duplicate agent id `a` (first defined at line 2)"
    );
}

#[test]
fn duplicate_team_id() {
    let team = "[[team]]\nid = \"t\"\nmembers = [\"a\"]\n";
    assert_eq!(
        error(&format!("{AGENT}{team}{team}")),
        "t.toml:9:6: id: duplicate team id `t` (first defined at line 6)"
    );
}

#[test]
fn invalid_ids() {
    assert_eq!(
        error("[[agent]]\nid = \"a b\"\nupstream = \"demo\"\nupstream_api = \"agents\"\n"),
        "t.toml:2:6: id: `a b` is not a valid id (1 to 128 of A-Z a-z 0-9 . _ -)"
    );
    assert_eq!(
        error(&format!("{AGENT}upstream_agent_id = \"x/y\"\n"))
            .split(" (")
            .next(),
        Some("t.toml:5:21: upstream_agent_id: `x/y` is not a usable path segment")
    );
}

#[test]
fn unknown_agents_in_a_team() {
    let text = format!(
        "{AGENT}[[team]]\nid = \"t\"\nmembers = [\"a\", \"ghost\", \"a\"]\nsummarizer = \"nobody\"\n"
    );
    assert_eq!(
        errors(&text),
        [
            "t.toml:7:17: members: no [[agent]] has the id `ghost`",
            "t.toml:7:26: members: `a` is listed twice",
            "t.toml:8:14: summarizer: no [[agent]] has the id `nobody`",
        ]
    );
}

#[test]
fn team_needs_members_and_modes() {
    let text = format!("{AGENT}[[team]]\nid = \"t\"\nmembers = []\nmodes = []\n");
    assert_eq!(
        errors(&text),
        [
            "t.toml:7:11: members: a team needs at least one agent",
            "t.toml:8:9: modes: a team needs at least one mode",
        ]
    );
    let text =
        format!("{AGENT}[[team]]\nid = \"t\"\nmembers = [\"a\"]\nmodes = [\"x\", \"Big\"]\n");
    assert_eq!(
        error(&text),
        "t.toml:8:15: modes: `Big` is not a valid mode (1 to 64 of a-z 0-9 - _)"
    );
}

#[test]
fn bad_upstream_urls() {
    let agent = |upstream: &str| {
        format!("[[agent]]\nid = \"a\"\nupstream = \"{upstream}\"\nupstream_api = \"agents\"\n")
    };
    assert_eq!(
        error(&agent("ftp://example.com")),
        "t.toml:3:12: upstream: expected an http:// or https:// base URL, or \"demo\""
    );
    assert_eq!(
        error(&agent("http://user:pw@example.com")),
        "t.toml:3:12: upstream: must not carry credentials; use `upstream_token`"
    );
    assert_eq!(
        error(&agent("http://example.com/?a=1")),
        "t.toml:3:12: upstream: a base URL takes no query string"
    );
    assert!(error(&agent("example.com")).starts_with("t.toml:3:12: upstream: "));
}

#[test]
fn bad_prefixes() {
    assert_eq!(
        error("[[front]]\napi = \"agents\"\nprefix = \"agents\"\n"),
        "t.toml:3:10: prefix: `agents` must start with `/` (or be empty)"
    );
    assert_eq!(
        error("[[front]]\napi = \"agents\"\nprefix = \"/agents/\"\n"),
        "t.toml:3:10: prefix: `/agents/` must not end with `/`"
    );
}

#[test]
fn fronts_sharing_a_listener_and_prefix() {
    let text = "[[front]]\napi = \"pharen\"\n\n[[front]]\napi = \"agents\"\n";
    assert_eq!(
        error(text),
        "t.toml:5:7: prefix: same prefix and listener as the pharen front at prefix `` \
         on 127.0.0.1:8080 (line 2)"
    );
    let text = "[[front]]\napi = \"pharen\"\nprefix = \"/x\"\n\
                [[front]]\napi = \"agents\"\nprefix = \"/x\"\nlisten = \"127.0.0.1:8080\"\n";
    assert!(error(text).starts_with("t.toml:6:10: prefix: same prefix and listener"));

    // The same prefix on two listeners is fine.
    let text =
        "[[front]]\napi = \"pharen\"\n[[front]]\napi = \"agents\"\nlisten = \"127.0.0.1:8081\"\n";
    assert_eq!(
        ok(text).listeners(),
        [addr("127.0.0.1:8080"), addr("127.0.0.1:8081")]
    );
}

#[test]
fn fronts_hiding_each_others_paths() {
    let text = "[[front]]\napi = \"chatbase\"\n[[front]]\napi = \"agents\"\nprefix = \"/api\"\n";
    assert!(
        error(text).starts_with("t.toml:5:10: prefix: `/api` overlaps the chatbase front"),
        "{}",
        error(text)
    );
    // A prefix that does not reach into the other front's paths is fine.
    ok("[[front]]\napi = \"chatbase\"\n[[front]]\napi = \"agents\"\nprefix = \"/apis\"\n");
    ok("[[front]]\napi = \"chatbase\"\n[[front]]\napi = \"agents\"\nprefix = \"/x/api\"\n");
}

#[test]
fn bad_addresses() {
    assert_eq!(
        error("[server]\nlisten = \"localhost:80\"\n"),
        "t.toml:2:10: listen: `localhost:80` is not an IP:PORT address \
         (like 127.0.0.1:8080 or [::]:8080)"
    );
    let text = "[server]\nadmin_listen = \"127.0.0.1:8080\"\nadmin_token = \"${ADMIN_TOKEN}\"\n";
    assert_eq!(
        error(text),
        "t.toml:2:16: admin_listen: must differ from `listen`"
    );
    // Both halves are checked even when one fails.
    let text = "[server]\nadmin_listen = \"127.0.0.1:8080\"\nadmin_token = \"short\"\n";
    assert_eq!(errors(text).len(), 2);
    let text = "[server]\nadmin_listen = \"127.0.0.1:9090\"\nadmin_token = \"${ADMIN_TOKEN}\"\n\
                [[front]]\napi = \"agents\"\nlisten = \"127.0.0.1:9090\"\n";
    assert_eq!(error(text), "t.toml:6:10: listen: is the admin listener");
}

#[test]
fn admin_listener_and_token_go_together() {
    assert!(error("[server]\nadmin_listen = \"127.0.0.1:9090\"\n")
        .starts_with("t.toml:2:16: admin_listen: needs `admin_token`"));
    assert!(error("[server]\nadmin_token = \"${ADMIN_TOKEN}\"\n")
        .starts_with("t.toml:2:15: admin_token: is set but `admin_listen` is not"));
    assert_eq!(
        error("[server]\nadmin_listen = \"127.0.0.1:9090\"\nadmin_token = \"short\"\n"),
        "t.toml:3:15: admin_token: must be at least 16 characters long"
    );
}

#[test]
fn admin_token_file_is_read_or_created() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("data/admin-token.txt");
    let text = format!(
        "[server]\nadmin_listen = \"127.0.0.1:9090\"\nadmin_token_file = \"{}\"\n",
        path.display()
    );
    // Created on first use, with a random token; read back (trimmed) from then on.
    let created = ok(&text).server().admin.clone().expect("admin");
    let written = std::fs::read_to_string(&path).expect("token file written");
    assert_eq!(written.trim(), created.token.expose());
    assert!(created.token.expose().len() >= 16);
    #[cfg(unix)]
    {
        // A secret: the file 0600, the directory made for it 0700 (issue 19.10).
        use std::os::unix::fs::PermissionsExt;
        let mode =
            |p: &std::path::Path| std::fs::metadata(p).expect("stat").permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o600, "token file");
        assert_eq!(mode(path.parent().expect("dir")), 0o700, "its directory");
    }
    let again = ok(&text).server().admin.clone().expect("admin");
    assert_eq!(again.token.expose(), created.token.expose());
    // A token file with a token too short is refused like `admin_token`.
    std::fs::write(&path, "short\n").expect("write");
    assert_eq!(
        error(&text),
        "t.toml:3:20: admin_token_file: must be at least 16 characters long"
    );
    let both = format!("{text}admin_token = \"${{ADMIN_TOKEN}}\"\n");
    assert!(error(&both).contains("set either `admin_token` or `admin_token_file`"));
}

#[test]
fn cors_origins() {
    let config = ok("[[front]]\napi = \"agents\"\ncors_origins = [\"HTTPS://App.example.com\", \"http://localhost:3000\"]\n\
                     [[front]]\napi = \"pharen\"\nprefix = \"/p\"\ncors_origins = [\"*\"]\n\
                     [[front]]\napi = \"guayaba\"\nprefix = \"/g\"\n");
    let origins: Vec<&[String]> = config
        .fronts()
        .iter()
        .map(|f| f.cors_origins.as_slice())
        .collect();
    assert_eq!(
        origins[0],
        ["https://app.example.com", "http://localhost:3000"]
    );
    assert_eq!(origins[1], ["*"]);
    assert!(origins[2].is_empty());
    // Every bad entry is named.
    let bad = errors("[[front]]\napi = \"agents\"\ncors_origins = [\"app.example.com\", \"https://a.example/\"]\n");
    assert_eq!(bad.len(), 2, "{bad:#?}");
    assert!(bad[0].starts_with("t.toml:3:17: cors_origins: `app.example.com` is not an origin"));
}

#[test]
fn numbers_out_of_range() {
    let text = format!(
        "{AGENT}credits_per_message = -1\nmax_usage_credits = nan\nrate_per_second = 0\n\
         max_concurrent_streams = 0\nidle_timeout_ms = 0\n"
    );
    assert_eq!(
        errors(&text),
        [
            "t.toml:5:23: credits_per_message: must be a finite number ≥ 0",
            "t.toml:6:21: max_usage_credits: must be a finite number ≥ 0",
            "t.toml:7:19: rate_per_second: must be a finite number > 0",
            "t.toml:8:26: max_concurrent_streams: must be at least 1",
            "t.toml:9:19: idle_timeout_ms: must be greater than 0",
        ]
    );
    assert_eq!(
        error("[server]\nmax_body_bytes = 0\n"),
        "t.toml:2:18: max_body_bytes: must be greater than 0"
    );
    assert_eq!(
        error("[rate_limit]\nkey_rate_burst = 5\n"),
        "t.toml:2:18: key_rate_burst: needs `key_rate_per_second`"
    );
}

#[test]
fn team_member_timeout_must_be_positive() {
    assert_eq!(
        error(&format!(
            "{AGENT}[[team]]\nid = \"t\"\nmembers = [\"a\"]\nmember_timeout_ms = 0\n"
        )),
        "t.toml:8:21: member_timeout_ms: must be greater than 0"
    );
}

#[test]
fn format_flags_must_apply() {
    assert_eq!(
        error("[[front]]\napi = \"agents\"\nevent_lines = true\n"),
        "t.toml:3:15: event_lines: applies to the ui-message format only, \
         and this front sends text-done"
    );
    assert_eq!(
        error("[[front]]\napi = \"chatbase\"\ntools_as_text = true\n"),
        "t.toml:3:17: tools_as_text: applies to the text-done format only, \
         and this front sends ui-message"
    );
    // Explicit `false` is harmless; a chosen format enables the flag.
    ok("[[front]]\napi = \"agents\"\nevent_lines = false\nformat = \"ui-message\"\n");
    ok("[[front]]\napi = \"agents\"\nformat = \"ui-message\"\nevent_lines = true\n");
}

#[test]
fn pharen_upstreams_need_uuids_but_pharen_fronts_do_not() {
    let text = "[[agent]]\nid = \"bot\"\nupstream = \"demo\"\nupstream_api = \"pharen\"\n";
    assert!(error(text).starts_with("t.toml:2:6: id: `bot` is also the backend's agent id"));
    let text = format!("{text}upstream_agent_id = \"nope\"\n");
    assert!(error(&text).starts_with("t.toml:5:21: upstream_agent_id: `nope` is not a UUID"));
    // A non-UUID agent behind a pharen front is only unreachable there.
    let config = ok(&format!("[[front]]\napi = \"pharen\"\n{AGENT}"));
    assert!(config.agent("a").is_some_and(|a| a.uuid().is_none()));
}

#[test]
fn health_check_rules() {
    assert_eq!(
        error(&format!("{AGENT}health_check = \"/health\"\n")),
        "t.toml:5:16: health_check: the demo upstream runs in process and has nothing to poll"
    );
    let text = "[[agent]]\nid = \"a\"\nupstream = \"http://h\"\nupstream_api = \"agents\"\n\
                health_check = \"health\"\n";
    assert_eq!(
        error(text),
        "t.toml:5:16: health_check: must be a path starting with `/`, like /health"
    );
}

#[test]
fn all_errors_are_reported_in_source_order() {
    let text = "[server]\nlisten = \"nowhere\"\n\n[[front]]\napi = \"agents\"\nprefix = \"x\"\n\n\
                [[agent]]\nid = \"a\"\nupstream = \"gopher://h\"\nupstream_api = \"agents\"\n\
                upstream_token = \"${NOPE}\"\n";
    let lines = errors(text);
    let locations: Vec<_> = lines
        .iter()
        .map(|l| l.splitn(4, ':').take(3).collect::<Vec<_>>().join(":"))
        .collect();
    assert_eq!(
        locations,
        ["t.toml:2:10", "t.toml:6:10", "t.toml:10:12", "t.toml:12:18"]
    );
}

// ----- ${ENV} ----------------------------------------------------------------------------------

#[test]
fn env_substitution() {
    let text = "[[agent]]\nid = \"a\"\nname = \"$${LITERAL} ${TOKEN}\"\nupstream = \"demo\"\n\
                upstream_api = \"agents\"\nupstream_token = \"${TOKEN}\"\n";
    let config = ok(text);
    let agent = config.agent("a").expect("agent a");
    assert_eq!(agent.name, "${LITERAL} tok-123");
    assert_eq!(
        agent.upstream_token.as_ref().map(Secret::expose),
        Some("tok-123")
    );
}

#[test]
fn env_errors_name_the_variable_and_line() {
    let text = format!("{AGENT}upstream_token = \"${{NOPE}}\"\n");
    assert_eq!(
        error(&text),
        "t.toml:5:18: upstream_token: environment variable `NOPE` is not set"
    );
    let text = format!("{AGENT}upstream_token = \"${{EMPTY}}\"\n");
    assert!(error(&text).starts_with("t.toml:5:18: upstream_token: is empty"));
    assert!(error("[store]\nurl = \"${DB\"\n").starts_with("t.toml:2:7: url: `${` without"));
}

#[test]
fn env_applies_to_addresses_and_paths() {
    let env = |name: &str| (name == "PORT").then(|| "9999".to_owned());
    let text =
        "[server]\nlisten = \"127.0.0.1:${PORT}\"\n[store]\nurl = \"sqlite://db-${PORT}.db\"\n";
    let config = Config::parse_with(text, "t.toml", Path::new("/d"), &env).expect("valid");
    assert_eq!(config.server().listen, addr("127.0.0.1:9999"));
    assert_eq!(
        config.store().url,
        StoreUrl::Sqlite(PathBuf::from("/d/db-9999.db"))
    );
}

// ----- loading --------------------------------------------------------------------------------

#[test]
fn load_resolves_paths_against_the_file() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("gate.toml");
    std::fs::write(&path, "[store]\nurl = \"sqlite://state/db.sqlite\"\n")?;
    let config = Config::load(&path)?;
    assert_eq!(config.base_dir(), dir.path());
    assert_eq!(
        config.store().url,
        StoreUrl::Sqlite(dir.path().join("state/db.sqlite"))
    );

    std::fs::write(&path, "[store]\nurl = 5\n")?;
    let message = Config::load(&path).map(|_| ()).unwrap_err().to_string();
    assert_eq!(
        message,
        format!(
            "{}:2:7: invalid type: integer `5`, expected a string",
            path.display()
        )
    );

    let missing = dir.path().join("missing.toml");
    let error = Config::load(&missing).map(|_| ()).unwrap_err();
    assert!(matches!(error, ConfigError::Read { .. }));
    assert!(error.diagnostics().is_empty());
    assert!(error
        .to_string()
        .starts_with(&format!("{}: cannot read", missing.display())));
    Ok(())
}

#[test]
fn embedded_default_parses() {
    let config = Config::embedded().expect("the embedded config is valid");
    // One front per chat API clients speak, one demo agent per API a backend speaks.
    let fronts: Vec<_> = config.fronts().iter().map(|f| f.api).collect();
    assert_eq!(fronts, Api::fronts().collect::<Vec<_>>());
    assert!(config
        .agents()
        .iter()
        .all(|a| a.upstream == Upstream::Demo && a.uuid().is_some()));
    let apis: Vec<_> = config.agents().iter().map(|a| a.upstream_api).collect();
    assert_eq!(apis, Api::upstreams().collect::<Vec<_>>());
    let team = config.teams().first().expect("a team");
    assert_eq!(team.members.len(), 3);
    assert!(team.summarizer.is_some());
    // The console is on in the quick start, its token in a file beside the store.
    let admin = config.server().admin.as_ref().expect("admin listener");
    assert_eq!(admin.listen, addr("127.0.0.1:9090"));
    assert!(admin.token.expose().len() >= 16);
}

#[test]
fn health_interval_and_watch_config() {
    let base = "[[agent]]\nid = \"a\"\nupstream = \"http://h\"\nupstream_api = \"agents\"\n";
    let config = ok(base);
    assert!(config.server().watch_config);
    assert_eq!(
        config.agent("a").expect("agent").health_interval,
        Duration::from_secs(10)
    );
    let config = ok(&format!(
        "[server]\nwatch_config = false\n{base}health_check = \"/h\"\nhealth_interval_ms = 250\n"
    ));
    assert!(!config.server().watch_config);
    assert_eq!(
        config.agent("a").expect("agent").health_interval,
        Duration::from_millis(250)
    );
    assert_eq!(
        error(&format!("{base}health_interval_ms = 250\n")),
        "t.toml:5:22: health_interval_ms: needs `health_check`"
    );
    assert_eq!(
        error(&format!(
            "{base}health_check = \"/h\"\nhealth_interval_ms = 0\n"
        )),
        "t.toml:6:22: health_interval_ms: must be greater than 0"
    );
}

#[test]
fn connection_bounds_have_defaults_and_are_checked() {
    let server = ok("").server().clone();
    assert_eq!(server.header_read_timeout, Duration::from_secs(10));
    assert_eq!(server.idle_timeout, Duration::from_secs(60));
    assert_eq!(server.body_read_timeout, Duration::from_secs(30));
    assert_eq!(server.max_connections, 10_000);
    let set = ok("[server]\nheader_read_timeout_s = 2\nidle_timeout_s = 3\nbody_read_timeout_s = 4\nmax_connections = 5\n");
    let server = set.server();
    assert_eq!(
        (
            server.header_read_timeout,
            server.idle_timeout,
            server.body_read_timeout,
            server.max_connections
        ),
        (
            Duration::from_secs(2),
            Duration::from_secs(3),
            Duration::from_secs(4),
            5
        )
    );
    assert_eq!(
        errors(
            "[server]\nheader_read_timeout_s = 0\nidle_timeout_s = 90000\nmax_connections = 0\n"
        ),
        [
            "t.toml:2:25: header_read_timeout_s: must be at least 1",
            "t.toml:3:18: idle_timeout_s: must be at most 86400",
            "t.toml:4:19: max_connections: must be at least 1",
        ]
    );
}

#[test]
fn with_listen_moves_the_main_listener_and_its_fronts() {
    let config = ok(&format!(
        "[server]\nlisten = \"127.0.0.1:8080\"\n[[front]]\napi = \"agents\"\n\
         [[front]]\napi = \"pharen\"\nprefix = \"/p\"\nlisten = \"127.0.0.1:9000\"\n{AGENT}"
    ))
    .with_listen(addr("0.0.0.0:8080"));
    assert_eq!(config.server().listen, addr("0.0.0.0:8080"));
    assert_eq!(
        config.listeners(),
        [addr("0.0.0.0:8080"), addr("127.0.0.1:9000")]
    );
    assert_eq!(config.fronts_on(addr("0.0.0.0:8080")).count(), 1);
}
