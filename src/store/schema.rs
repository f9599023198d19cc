//! The schema migrations of both stores: one numbered list, applied in order and recorded in
//! `schema_version`, so SQLite and PostgreSQL always report the same version.
//!
//! Each migration is written once, in portable SQL with type words that [`Dialect::render`]
//! maps: `{INT}` (64-bit integer: SQLite `INTEGER`, PostgreSQL `BIGINT`), `{REAL}` (`REAL` /
//! `DOUBLE PRECISION`), `{BLOB}` (`BLOB` / `BYTEA`), `{BOOL}` (`INTEGER` / `BOOLEAN`) and
//! `{FALSE}` (`0` / `FALSE`). Timestamps are Unix milliseconds, no AUTOINCREMENT or rowid
//! tricks. Where the SQL itself differs (JSON functions), a step is written per dialect; the
//! credit-lease tables, a feature of shared stores, exist on PostgreSQL only
//! ([`POSTGRES_ONLY_TABLES`]).
//!
//! Never edit a released entry in a way that changes what it creates; append a new one.
//! `tests/store_schema.rs` checks that both stores end with the same tables and columns.

/// The SQL dialect a migration is rendered for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dialect {
    Sqlite,
    Postgres,
}

impl Dialect {
    /// `sql` with its type words replaced by this dialect's types.
    pub(crate) fn render(self, sql: &str) -> String {
        let words: [(&str, &str); 5] = match self {
            Dialect::Sqlite => [
                ("{INT}", "INTEGER"),
                ("{REAL}", "REAL"),
                ("{BLOB}", "BLOB"),
                ("{BOOL}", "INTEGER"),
                ("{FALSE}", "0"),
            ],
            Dialect::Postgres => [
                ("{INT}", "BIGINT"),
                ("{REAL}", "DOUBLE PRECISION"),
                ("{BLOB}", "BYTEA"),
                ("{BOOL}", "BOOLEAN"),
                ("{FALSE}", "FALSE"),
            ],
        };
        words
            .iter()
            .fold(sql.to_owned(), |sql, (word, ty)| sql.replace(word, ty))
    }
}

/// One step of a migration.
pub(crate) enum Step {
    /// The same statements on both stores (after [`Dialect::render`]).
    Both(&'static str),
    /// Statements where the SQL differs (or that concern one dialect only).
    Only(Dialect, &'static str),
}

/// One numbered migration.
pub(crate) struct Migration {
    pub(crate) version: i64,
    pub(crate) steps: &'static [Step],
}

impl Migration {
    /// The statements to run on `dialect`, in order.
    pub(crate) fn sql(&self, dialect: Dialect) -> String {
        self.steps
            .iter()
            .filter_map(|s| match s {
                Step::Both(sql) => Some(dialect.render(sql)),
                Step::Only(d, sql) if *d == dialect => Some(dialect.render(sql)),
                Step::Only(..) => None,
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// Tables that exist on PostgreSQL only: credit leases (`[store] lease_credits`) need a store
/// shared by replicas.
pub const POSTGRES_ONLY_TABLES: &[&str] = &["leases", "lease_usage"];

/// The migrations, oldest first.
pub(crate) const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        steps: &[
            Step::Both(
                r#"
CREATE TABLE accounts (
    id         TEXT PRIMARY KEY,
    balance    {INT} NOT NULL DEFAULT 0 CHECK (balance >= 0),
    created_at {INT} NOT NULL
);
CREATE TABLE grants (
    id         TEXT PRIMARY KEY,
    account    TEXT NOT NULL REFERENCES accounts (id),
    amount     {INT} NOT NULL,
    memo       TEXT,
    created_at {INT} NOT NULL
);
CREATE INDEX grants_account ON grants (account);
CREATE TABLE api_keys (
    public_id       TEXT PRIMARY KEY,
    hash            TEXT NOT NULL,
    account         TEXT NOT NULL REFERENCES accounts (id),
    kind            TEXT NOT NULL,
    scopes          TEXT NOT NULL,
    agents          TEXT,
    created_at      {INT} NOT NULL,
    expires_at      {INT},
    revoked_at      {INT},
    rate_per_second {INT},
    rate_burst      {INT},
    max_streams     {INT}
);
CREATE INDEX api_keys_account ON api_keys (account);
CREATE TABLE reservations (
    id         TEXT PRIMARY KEY,
    account    TEXT NOT NULL REFERENCES accounts (id),
    key_id     TEXT NOT NULL,
    agent_id   TEXT NOT NULL,
    reserved   {INT} NOT NULL CHECK (reserved >= 0),
    fallback   {INT} NOT NULL,
    charged    {INT},
    state      TEXT NOT NULL CHECK (state IN ('pending', 'posted', 'voided')),
    created_at {INT} NOT NULL,
    expires_at {INT} NOT NULL,
    settled_at {INT}
);
CREATE INDEX reservations_open ON reservations (state, expires_at);
CREATE INDEX reservations_account ON reservations (account, created_at);
CREATE INDEX reservations_key ON reservations (key_id, created_at);
CREATE INDEX reservations_agent ON reservations (agent_id, created_at);
CREATE TABLE idempotency (
    account      TEXT NOT NULL,
    idem_key     TEXT NOT NULL,
    body_hash    TEXT NOT NULL,
    state        TEXT NOT NULL CHECK (state IN ('in_flight', 'complete')),
    owner        TEXT NOT NULL,
    status       {INT},
    content_type TEXT,
    response     {BLOB},
    created_at   {INT} NOT NULL,
    locked_until {INT} NOT NULL,
    PRIMARY KEY (account, idem_key)
);
CREATE TABLE counters (
    name  TEXT PRIMARY KEY,
    value {INT} NOT NULL
);
INSERT INTO counters (name, value) VALUES ('revocations', 0);
"#,
            ),
            // Credit leases and the charges posted from them (POSTGRES_ONLY_TABLES).
            Step::Only(
                Dialect::Postgres,
                r#"
CREATE TABLE leases (
    id         TEXT PRIMARY KEY,
    account    TEXT NOT NULL REFERENCES accounts (id),
    holder     TEXT NOT NULL,
    amount     {INT} NOT NULL CHECK (amount >= 0),
    created_at {INT} NOT NULL,
    expires_at {INT} NOT NULL
);
CREATE INDEX leases_expiry ON leases (expires_at);
CREATE TABLE lease_usage (
    id         TEXT PRIMARY KEY,
    lease_id   TEXT NOT NULL,
    account    TEXT NOT NULL REFERENCES accounts (id),
    key_id     TEXT NOT NULL,
    agent_id   TEXT NOT NULL,
    requests   {INT} NOT NULL,
    charged    {INT} NOT NULL CHECK (charged >= 0),
    created_at {INT} NOT NULL
);
CREATE INDEX lease_usage_account ON lease_usage (account, created_at);
"#,
            ),
        ],
    },
    // Conversations and transcripts (src/store/transcripts.rs).
    Migration {
        version: 2,
        steps: &[Step::Both(
            r#"
CREATE TABLE conversations (
    account    TEXT NOT NULL,
    agent_id   TEXT NOT NULL,
    id         TEXT NOT NULL,
    front      TEXT NOT NULL,
    backend_id TEXT,
    title      TEXT,
    archived   {BOOL} NOT NULL DEFAULT {FALSE},
    created_at {INT} NOT NULL,
    updated_at {INT} NOT NULL,
    PRIMARY KEY (account, agent_id, id)
);
CREATE INDEX conversations_list ON conversations (account, agent_id, created_at, id);
CREATE TABLE messages (
    id              TEXT PRIMARY KEY,
    account         TEXT NOT NULL,
    agent_id        TEXT NOT NULL,
    conversation_id TEXT NOT NULL,
    seq             {INT} NOT NULL,
    role            TEXT NOT NULL CHECK (role IN ('user', 'assistant')),
    content         TEXT NOT NULL,
    tool_calls      TEXT,
    credits         {INT},
    created_at      {INT} NOT NULL,
    read_at         {INT},
    UNIQUE (account, agent_id, conversation_id, seq)
);
CREATE INDEX messages_inbox ON messages (account, agent_id, read_at, created_at, id);
"#,
        )],
    },
    // Key rates are real numbers. `rate_per_second` keeps the rate rounded up, as binaries
    // before this version read it (an integer), so they go on working beside newer ones.
    Migration {
        version: 3,
        steps: &[Step::Both(
            "ALTER TABLE api_keys ADD COLUMN rate_per_second_exact {REAL};",
        )],
    },
    // chatbase `userId`, fixed when a conversation is opened (SPEC §11).
    Migration {
        version: 4,
        steps: &[Step::Both(
            "ALTER TABLE conversations ADD COLUMN user_id TEXT;",
        )],
    },
    // An answer kept only up to `[server] max_answer_bytes` is marked.
    Migration {
        version: 5,
        steps: &[Step::Both(
            "ALTER TABLE messages ADD COLUMN truncated {BOOL} NOT NULL DEFAULT {FALSE};",
        )],
    },
    // Each message's parts in the AI SDK `UIMessage` form (SPEC §8); rows written before hold
    // their text as one text part.
    Migration {
        version: 6,
        steps: &[
            Step::Both("ALTER TABLE messages ADD COLUMN parts TEXT;"),
            Step::Only(
                Dialect::Sqlite,
                r#"
UPDATE messages SET parts = CASE
    WHEN content = '' THEN '[]'
    ELSE json_array(json_object('type', 'text', 'text', content))
END;
"#,
            ),
            Step::Only(
                Dialect::Postgres,
                r#"
UPDATE messages SET parts = CASE
    WHEN content = '' THEN '[]'
    ELSE jsonb_build_array(jsonb_build_object('type', 'text', 'text', content))::text
END;
"#,
            ),
        ],
    },
];

/// The newest schema version this binary knows.
pub(crate) fn latest() -> i64 {
    MIGRATIONS.last().map_or(0, |m| m.version)
}

/// The migrations newer than `current`, oldest first.
pub(crate) fn after(current: i64) -> impl Iterator<Item = &'static Migration> {
    MIGRATIONS.iter().filter(move |m| m.version > current)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Versions are 1, 2, 3, … with no gap or repeat.
    #[test]
    fn versions_count_up() {
        let versions: Vec<i64> = MIGRATIONS.iter().map(|m| m.version).collect();
        let expected: Vec<i64> = (1..=MIGRATIONS.len() as i64).collect();
        assert_eq!(versions, expected);
    }

    /// Every type word is replaced: nothing in braces is left for either dialect.
    #[test]
    fn every_type_word_is_rendered() {
        for m in MIGRATIONS {
            for d in [Dialect::Sqlite, Dialect::Postgres] {
                let sql = m.sql(d);
                assert!(
                    !sql.contains('{'),
                    "v{} {d:?} left a word: {sql}",
                    m.version
                );
            }
        }
    }

    /// The tables created on PostgreSQL only are exactly `POSTGRES_ONLY_TABLES`.
    #[test]
    fn postgres_only_tables_are_declared() {
        let mut only: Vec<String> = MIGRATIONS
            .iter()
            .flat_map(|m| m.steps)
            .filter_map(|s| match s {
                Step::Only(Dialect::Postgres, sql) => Some(*sql),
                _ => None,
            })
            .flat_map(|sql| sql.split("CREATE TABLE ").skip(1))
            .filter_map(|rest| rest.split_whitespace().next().map(str::to_owned))
            .collect();
        only.sort();
        let mut declared: Vec<String> =
            POSTGRES_ONLY_TABLES.iter().map(|t| t.to_string()).collect();
        declared.sort();
        assert_eq!(only, declared);
    }
}
