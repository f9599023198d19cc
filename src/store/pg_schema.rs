//! PostgreSQL migrations: the same tables, columns and version numbers as `schema.rs`, in
//! PostgreSQL's types (`BIGINT` for SQLite's 64-bit `INTEGER`, `BYTEA` for `BLOB`).
//!
//! PostgreSQL's version 1 also holds the credit-lease tables (`leases`, `lease_usage`), a
//! feature of shared stores only. Keep the two lists in step: a migration added to SQLite gets its PostgreSQL twin here under
//! the same number, so both backends report the same schema version.

/// `(version, SQL)` pairs; never edit a released entry, append a new one.
pub(crate) const MIGRATIONS: &[(i64, &str)] = &[
    (
        1,
        r#"
CREATE TABLE accounts (
    id         TEXT PRIMARY KEY,
    balance    BIGINT NOT NULL DEFAULT 0 CHECK (balance >= 0),
    created_at BIGINT NOT NULL
);
CREATE TABLE grants (
    id         TEXT PRIMARY KEY,
    account    TEXT NOT NULL REFERENCES accounts (id),
    amount     BIGINT NOT NULL,
    memo       TEXT,
    created_at BIGINT NOT NULL
);
CREATE INDEX grants_account ON grants (account);
CREATE TABLE api_keys (
    public_id       TEXT PRIMARY KEY,
    hash            TEXT NOT NULL,
    account         TEXT NOT NULL REFERENCES accounts (id),
    kind            TEXT NOT NULL,
    scopes          TEXT NOT NULL,
    agents          TEXT,
    created_at      BIGINT NOT NULL,
    expires_at      BIGINT,
    revoked_at      BIGINT,
    rate_per_second BIGINT,
    rate_burst      BIGINT,
    max_streams     BIGINT
);
CREATE INDEX api_keys_account ON api_keys (account);
CREATE TABLE reservations (
    id         TEXT PRIMARY KEY,
    account    TEXT NOT NULL REFERENCES accounts (id),
    key_id     TEXT NOT NULL,
    agent_id   TEXT NOT NULL,
    reserved   BIGINT NOT NULL CHECK (reserved >= 0),
    fallback   BIGINT NOT NULL,
    charged    BIGINT,
    state      TEXT NOT NULL CHECK (state IN ('pending', 'posted', 'voided')),
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    settled_at BIGINT
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
    status       BIGINT,
    content_type TEXT,
    response     BYTEA,
    created_at   BIGINT NOT NULL,
    locked_until BIGINT NOT NULL,
    PRIMARY KEY (account, idem_key)
);
CREATE TABLE counters (
    name  TEXT PRIMARY KEY,
    value BIGINT NOT NULL
);
INSERT INTO counters (name, value) VALUES ('revocations', 0);
-- PostgreSQL only: credit leases (`[store] lease_credits`) and the charges posted from them.
CREATE TABLE leases (
    id         TEXT PRIMARY KEY,
    account    TEXT NOT NULL REFERENCES accounts (id),
    holder     TEXT NOT NULL,
    amount     BIGINT NOT NULL CHECK (amount >= 0),
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE INDEX leases_expiry ON leases (expires_at);
CREATE TABLE lease_usage (
    id         TEXT PRIMARY KEY,
    lease_id   TEXT NOT NULL,
    account    TEXT NOT NULL REFERENCES accounts (id),
    key_id     TEXT NOT NULL,
    agent_id   TEXT NOT NULL,
    requests   BIGINT NOT NULL,
    charged    BIGINT NOT NULL CHECK (charged >= 0),
    created_at BIGINT NOT NULL
);
CREATE INDEX lease_usage_account ON lease_usage (account, created_at);
"#,
    ),
    (
        2,
        r#"
CREATE TABLE conversations (
    account    TEXT NOT NULL,
    agent_id   TEXT NOT NULL,
    id         TEXT NOT NULL,
    front      TEXT NOT NULL,
    backend_id TEXT,
    title      TEXT,
    archived   BOOLEAN NOT NULL DEFAULT FALSE,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (account, agent_id, id)
);
CREATE INDEX conversations_list ON conversations (account, agent_id, created_at, id);
CREATE TABLE messages (
    id              TEXT PRIMARY KEY,
    account         TEXT NOT NULL,
    agent_id        TEXT NOT NULL,
    conversation_id TEXT NOT NULL,
    seq             BIGINT NOT NULL,
    role            TEXT NOT NULL CHECK (role IN ('user', 'assistant')),
    content         TEXT NOT NULL,
    tool_calls      TEXT,
    credits         BIGINT,
    created_at      BIGINT NOT NULL,
    read_at         BIGINT,
    UNIQUE (account, agent_id, conversation_id, seq)
);
CREATE INDEX messages_inbox ON messages (account, agent_id, read_at, created_at, id);
"#,
    ),
    (
        3,
        // As SQLite's 3: the exact rate beside the rounded-up one older replicas read.
        "ALTER TABLE api_keys ADD COLUMN rate_per_second_exact DOUBLE PRECISION;",
    ),
    // chatbase `userId`, fixed when a conversation is opened (SPEC §11).
    (4, "ALTER TABLE conversations ADD COLUMN user_id TEXT;"),
    // An answer kept only up to `[server] max_answer_bytes` is marked.
    (
        5,
        "ALTER TABLE messages ADD COLUMN truncated BOOLEAN NOT NULL DEFAULT FALSE;",
    ),
    // Each message's parts in the AI SDK `UIMessage` form (SPEC §8); rows written before hold
    // their text as one text part.
    (
        6,
        r#"
ALTER TABLE messages ADD COLUMN parts TEXT;
UPDATE messages SET parts = CASE
    WHEN content = '' THEN '[]'
    ELSE jsonb_build_array(jsonb_build_object('type', 'text', 'text', content))::text
END;
"#,
    ),
];

/// The newest schema version this binary knows.
pub(crate) fn latest() -> i64 {
    MIGRATIONS.last().map_or(0, |m| m.0)
}

#[cfg(test)]
mod tests {
    /// Both backends must agree on the version numbers (the SQL differs only in types).
    #[test]
    fn versions_match_sqlite() {
        let pg: Vec<i64> = super::MIGRATIONS.iter().map(|m| m.0).collect();
        let sqlite: Vec<i64> = crate::store::schema::MIGRATIONS
            .iter()
            .map(|m| m.0)
            .collect();
        assert_eq!(pg, sqlite);
    }
}
