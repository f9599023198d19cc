//! The operator surface: the admin HTTP API and the helpers it shares with the CLI's
//! `keys`/`credits`/`usage` subcommands (`crate::cli::admin`).

pub mod console;
pub mod http;

use serde_json::{json, Value};

use crate::auth::{KeyInfo, KeySpecError};
use crate::credits::{from_milli, CreditError};
use crate::store::time::format_rfc3339;
use crate::store::{StoreError, UsageRow};

pub use self::http::{handle, AdminCtx};

/// Errors of admin operations.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("{0}")]
    Input(String),
    #[error("{0}")]
    Config(String),
    #[error("key {0} not found")]
    KeyNotFound(String),
    #[error(transparent)]
    Key(#[from] KeySpecError),
    #[error(transparent)]
    Credits(#[from] CreditError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("output: {0}")]
    Io(#[from] std::io::Error),
}

/// A key as the admin API and `keys list --format json` show it (never a secret).
pub fn key_json(k: &KeyInfo) -> Value {
    let l = k.limits();
    json!({
        "public_id": k.public_id(),
        "account": k.account(),
        "kind": k.kind().as_str(),
        "scopes": k.scopes().names().collect::<Vec<_>>(),
        "agents": k.agents(),
        "created_at": format_rfc3339(k.created_at()),
        "expires_at": k.expires_at().map(format_rfc3339),
        "revoked_at": k.revoked_at().map(format_rfc3339),
        "rate_per_second": l.rate_per_second,
        "rate_burst": l.rate_burst,
        "max_streams": l.max_streams,
    })
}

/// A usage row as JSON (credits as numbers).
pub fn usage_json(r: &UsageRow) -> Value {
    json!({
        "account": r.account,
        "key": r.key_id,
        "agent": r.agent_id,
        "requests": r.requests,
        "credits": from_milli(r.charged),
        "pending": r.pending,
    })
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_owned()
    }
}

/// Renders rows as CSV with a header line.
pub(crate) fn csv(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut out = header.join(",");
    out.push('\n');
    for row in rows {
        let fields: Vec<String> = row.iter().map(|f| csv_field(f)).collect();
        out.push_str(&fields.join(","));
        out.push('\n');
    }
    out
}

/// Renders rows as an aligned text table.
pub(crate) fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, f) in widths.iter_mut().zip(row) {
            *w = (*w).max(f.chars().count());
        }
    }
    let line = |fields: Vec<&str>| {
        let cells: Vec<String> = fields
            .iter()
            .zip(&widths)
            .map(|(f, w)| format!("{f:<w$}"))
            .collect();
        format!("{}\n", cells.join("  ").trim_end())
    };
    let mut out = line(header.to_vec());
    for row in rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out
}

pub(crate) fn usage_cells(r: &UsageRow) -> Vec<String> {
    vec![
        r.account.clone(),
        r.key_id.clone(),
        r.agent_id.clone(),
        r.requests.to_string(),
        from_milli(r.charged).to_string(),
        r.pending.to_string(),
    ]
}

pub(crate) const USAGE_HEADER: [&str; 6] =
    ["account", "key", "agent", "requests", "credits", "pending"];
