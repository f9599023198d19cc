//! `agentgate keys|credits|usage`: clap types and `run` functions, dispatched by [`super::run`].
//!
//! Each command opens the store itself, so it works on the same SQLite file while a server
//! runs (WAL lets readers and one writer proceed; `busy_timeout` waits out the other writer).

use std::io::Write;
use std::time::Duration;

use serde_json::json;

use crate::admin::{csv, key_json, table, usage_cells, usage_json, AdminError, USAGE_HEADER};
use crate::auth::{self, KeyInfo, KeyKind, KeyLimits, NewKeySpec, Scopes};
use crate::config::DEFAULT_CONFIG_PATH;
use crate::credits::{Ledger, LedgerConfig};
use crate::store::time::{format_rfc3339, parse_rfc3339};
use crate::store::{now_ms, RevokeOutcome, Store, UsageFilter};

/// Where the store is; shared by every admin subcommand.
#[derive(Debug, Clone, clap::Args)]
pub struct StoreArgs {
    /// Store URL, e.g. sqlite:///var/lib/agentgate/agentgate.db. Default: the store of the
    /// config file (`--config`), so the CLI works on the store of a running server.
    #[arg(long = "store", env = "AGENTGATE_STORE", global = true)]
    pub store: Option<String>,
    /// The config file whose `[store]` is used when `--store` is not given (the embedded quick
    /// start when this default file is absent).
    #[arg(long, default_value = DEFAULT_CONFIG_PATH, global = true)]
    pub config: std::path::PathBuf,
}

impl StoreArgs {
    /// The config of `--config` (the embedded quick start when the default file is absent).
    pub fn load_config(&self) -> Result<crate::config::Config, AdminError> {
        crate::config::Config::load_or_embedded(&self.config)
            .map_err(|e| AdminError::Config(e.to_string()))
    }

    pub async fn open(&self) -> Result<Store, AdminError> {
        let url = match &self.store {
            Some(url) => url.clone(),
            None => {
                let config = self.load_config()?;
                match &config.store().url {
                    crate::config::StoreUrl::Sqlite(path) => {
                        format!("sqlite://{}", path.display())
                    }
                    crate::config::StoreUrl::Postgres(url) => url.expose().to_owned(),
                    crate::config::StoreUrl::SqliteMemory => {
                        return Err(AdminError::Config(
                            "the config's [store] is in memory; pass --store".into(),
                        ))
                    }
                }
            }
        };
        Ok(Store::open(&url).await?)
    }
}

/// Output format of listings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum OutputFormat {
    #[default]
    Table,
    Json,
    Csv,
}

/// `agentgate keys …`
#[derive(Debug, clap::Args)]
pub struct KeysArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    #[command(subcommand)]
    pub command: KeysCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum KeysCommand {
    /// Create a key. The full key is printed once and never again.
    Create(KeysCreateArgs),
    /// List keys (never their secrets).
    List {
        #[arg(long)]
        account: Option<String>,
        #[arg(long, value_enum, default_value_t)]
        format: OutputFormat,
    },
    /// Revoke a key by its public id; it stops working within a second everywhere.
    Revoke { public_id: String },
}

#[derive(Debug, clap::Args)]
pub struct KeysCreateArgs {
    #[arg(long)]
    pub account: String,
    /// master (every scope and agent of the account) or agent.
    #[arg(long, default_value = "agent")]
    pub kind: KeyKind,
    /// Comma-separated scopes for an agent key (default: agents:run).
    #[arg(long)]
    pub scopes: Option<Scopes>,
    /// Comma-separated agent ids the key may call (default: all of the account's).
    #[arg(long, value_delimiter = ',')]
    pub agents: Option<Vec<String>>,
    #[arg(long)]
    pub expires_in_days: Option<u32>,
    /// Requests per second, a real number (0.5: one every 2 s).
    #[arg(long)]
    pub rate_per_second: Option<f64>,
    #[arg(long)]
    pub rate_burst: Option<u32>,
    #[arg(long)]
    pub max_streams: Option<u32>,
}

impl KeysCreateArgs {
    fn spec(&self) -> NewKeySpec {
        NewKeySpec {
            account: self.account.clone(),
            kind: self.kind,
            scopes: self.scopes.unwrap_or(Scopes::AGENTS_RUN),
            agents: self.agents.clone(),
            expires_at: self
                .expires_in_days
                .map(|d| now_ms().saturating_add(i64::from(d).saturating_mul(86_400_000))),
            limits: KeyLimits {
                rate_per_second: self.rate_per_second,
                rate_burst: self.rate_burst,
                max_streams: self.max_streams,
            },
        }
    }
}

/// `agentgate credits …`
#[derive(Debug, clap::Args)]
pub struct CreditsArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    #[command(subcommand)]
    pub command: CreditsCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum CreditsCommand {
    /// Add prepaid credits to an account (creating it).
    Grant {
        #[arg(long)]
        account: String,
        #[arg(long)]
        credits: f64,
        #[arg(long)]
        memo: Option<String>,
    },
    /// Show an account's balance.
    Balance {
        #[arg(long)]
        account: String,
    },
}

/// `agentgate usage …`: requests and credits per account, key and agent over a time range.
#[derive(Debug, clap::Args)]
pub struct UsageArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    #[arg(long)]
    pub account: Option<String>,
    #[arg(long)]
    pub key: Option<String>,
    #[arg(long)]
    pub agent: Option<String>,
    /// Start of the range (RFC 3339 or YYYY-MM-DD).
    #[arg(long, conflicts_with = "hours")]
    pub since: Option<String>,
    /// Start of the range as hours before now.
    #[arg(long)]
    pub hours: Option<u64>,
    /// End of the range, exclusive (RFC 3339 or YYYY-MM-DD; default: now).
    #[arg(long)]
    pub until: Option<String>,
    #[arg(long, value_enum, default_value_t)]
    pub format: OutputFormat,
}

fn key_cells(k: &KeyInfo) -> Vec<String> {
    fn opt(v: Option<impl ToString>) -> String {
        v.map_or_else(|| "-".to_owned(), |n| n.to_string())
    }
    let l = k.limits();
    vec![
        k.public_id().to_owned(),
        k.account().to_owned(),
        k.kind().to_string(),
        k.scopes().to_string(),
        k.agents().map_or_else(|| "*".to_owned(), |a| a.join(",")),
        k.expires_at()
            .map_or_else(|| "-".to_owned(), format_rfc3339),
        k.revoked_at()
            .map_or_else(|| "-".to_owned(), format_rfc3339),
        format!(
            "{}/{}/{}",
            opt(l.rate_per_second),
            opt(l.rate_burst),
            opt(l.max_streams)
        ),
    ]
}

const KEY_HEADER: [&str; 8] = [
    "public_id",
    "account",
    "kind",
    "scopes",
    "agents",
    "expires_at",
    "revoked_at",
    "rate/burst/streams",
];

/// Runs `agentgate keys …`, writing to `out`.
pub async fn run_keys(args: KeysArgs, out: &mut impl Write) -> Result<(), AdminError> {
    let store = args.store.open().await?;
    match args.command {
        KeysCommand::Create(c) => {
            let mut spec = c.spec();
            if let Some(agents) = &mut spec.agents {
                *agents = known_agents(&args.store, agents)?;
            }
            let (secret, info) = auth::create_key(&store, spec).await?;
            writeln!(out, "key:       {}", secret.expose())?;
            writeln!(out, "public id: {}", info.public_id())?;
            writeln!(out, "account:   {}", info.account())?;
            writeln!(out, "kind:      {}", info.kind())?;
            writeln!(out, "scopes:    {}", info.scopes())?;
            writeln!(out, "Store the key now: it is shown only this once.")?;
        }
        KeysCommand::List { account, format } => {
            let keys = auth::list_keys(&store, account.as_deref()).await?;
            match format {
                OutputFormat::Json => {
                    let v: Vec<_> = keys.iter().map(key_json).collect();
                    writeln!(out, "{}", json!({ "keys": v }))?;
                }
                OutputFormat::Csv => {
                    let rows: Vec<_> = keys.iter().map(key_cells).collect();
                    write!(out, "{}", csv(&KEY_HEADER, &rows))?;
                }
                OutputFormat::Table => {
                    let rows: Vec<_> = keys.iter().map(key_cells).collect();
                    write!(out, "{}", table(&KEY_HEADER, &rows))?;
                }
            }
        }
        KeysCommand::Revoke { public_id } => match store.revoke_key(&public_id, now_ms()).await? {
            RevokeOutcome::Revoked => writeln!(out, "revoked {public_id}")?,
            RevokeOutcome::AlreadyRevoked => writeln!(out, "{public_id} was already revoked")?,
            RevokeOutcome::NotFound => return Err(AdminError::KeyNotFound(public_id)),
        },
    }
    Ok(())
}

/// `--agents` as the config names them (a UUID in either case is the same agent); an agent
/// the config (`--config`) does not know is refused, since such a key could call nothing.
fn known_agents(args: &StoreArgs, agents: &[String]) -> Result<Vec<String>, AdminError> {
    let config = args.load_config()?;
    let source = if args.config.exists() {
        args.config.display().to_string()
    } else {
        "the embedded quick-start config".to_owned()
    };
    agents
        .iter()
        .map(|id| {
            config.find_agent(id).map(|a| a.id.clone()).ok_or_else(|| {
                let known: Vec<&str> = config.agents().iter().map(|a| a.id.as_str()).collect();
                AdminError::Input(format!(
                    "--agents: `{id}` is not an agent of {source} (pass the server's \
                         config with --config); known agents: {}",
                    known.join(", ")
                ))
            })
        })
        .collect()
}

/// Runs `agentgate credits …`, writing to `out`.
pub async fn run_credits(args: CreditsArgs, out: &mut impl Write) -> Result<(), AdminError> {
    let ledger = Ledger::new(args.store.open().await?, LedgerConfig::default());
    match args.command {
        CreditsCommand::Grant {
            account,
            credits,
            memo,
        } => {
            if !auth::valid_account(&account) {
                return Err(AdminError::Input(format!("invalid account `{account}`")));
            }
            let balance = ledger.grant(&account, credits, memo.as_deref()).await?;
            writeln!(
                out,
                "granted {credits} credits to {account}; balance {balance}"
            )?;
        }
        CreditsCommand::Balance { account } => {
            // An unknown account (a typo, most likely) is not shown as a balance of 0.
            let Some(balance) = ledger.store().balance(&account).await? else {
                return Err(AdminError::Input(format!(
                    "no account `{account}` (an account exists from its first credits grant)"
                )));
            };
            writeln!(out, "{}", crate::credits::from_milli(balance))?;
        }
    }
    Ok(())
}

/// Resolves `--since/--hours/--until` into a filter range.
pub(crate) fn time_range(
    since: Option<&str>,
    hours: Option<u64>,
    until: Option<&str>,
    now: i64,
) -> Result<(Option<i64>, Option<i64>), AdminError> {
    let parse = |name: &str, v: &str| {
        parse_rfc3339(v)
            .ok_or_else(|| AdminError::Input(format!("--{name}: `{v}` is not an RFC 3339 time")))
    };
    let since = match (since, hours) {
        (Some(s), _) => Some(parse("since", s)?),
        (None, Some(h)) => {
            let span = Duration::from_secs(h.saturating_mul(3600)).as_millis();
            Some(now.saturating_sub(i64::try_from(span).unwrap_or(i64::MAX)))
        }
        (None, None) => None,
    };
    let until = until.map(|u| parse("until", u)).transpose()?;
    Ok((since, until))
}

/// Runs `agentgate usage …`, writing to `out`.
pub async fn run_usage(args: UsageArgs, out: &mut impl Write) -> Result<(), AdminError> {
    let (since, until) = time_range(
        args.since.as_deref(),
        args.hours,
        args.until.as_deref(),
        now_ms(),
    )?;
    let store = args.store.open().await?;
    let rows = store
        .usage(UsageFilter {
            account: args.account,
            key_id: args.key,
            agent_id: args.agent,
            since,
            until,
        })
        .await?;
    match args.format {
        OutputFormat::Json => {
            let v: Vec<_> = rows.iter().map(usage_json).collect();
            writeln!(out, "{}", json!({ "usage": v }))?;
        }
        OutputFormat::Csv => {
            let cells: Vec<_> = rows.iter().map(usage_cells).collect();
            write!(out, "{}", csv(&USAGE_HEADER, &cells))?;
        }
        OutputFormat::Table => {
            let cells: Vec<_> = rows.iter().map(usage_cells).collect();
            write!(out, "{}", table(&USAGE_HEADER, &cells))?;
        }
    }
    Ok(())
}
