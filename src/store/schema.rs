//! Numbered schema migrations, applied in order and recorded in `schema_version`.
//!
//! The SQL is kept portable to PostgreSQL: INTEGER and TEXT columns, timestamps as Unix
//! milliseconds, no AUTOINCREMENT or rowid tricks. Only `BLOB` becomes `BYTEA` there.

/// `(version, SQL)` pairs; never edit a released entry, append a new one.
pub(crate) const MIGRATIONS: &[(i64, &str)] = &[
    (
        1,
        r#"
CREATE TABLE accounts (
    id         TEXT PRIMARY KEY,
    balance    INTEGER NOT NULL DEFAULT 0 CHECK (balance >= 0),
    created_at INTEGER NOT NULL
);
CREATE TABLE grants (
    id         TEXT PRIMARY KEY,
    account    TEXT NOT NULL REFERENCES accounts (id),
    amount     INTEGER NOT NULL,
    memo       TEXT,
    created_at INTEGER NOT NULL
);
CREATE INDEX grants_account ON grants (account);
CREATE TABLE api_keys (
    public_id       TEXT PRIMARY KEY,
    hash            TEXT NOT NULL,
    account         TEXT NOT NULL REFERENCES accounts (id),
    kind            TEXT NOT NULL,
    scopes          TEXT NOT NULL,
    agents          TEXT,
    created_at      INTEGER NOT NULL,
    expires_at      INTEGER,
    revoked_at      INTEGER,
    rate_per_second INTEGER,
    rate_burst      INTEGER,
    max_streams     INTEGER
);
CREATE INDEX api_keys_account ON api_keys (account);
CREATE TABLE reservations (
    id         TEXT PRIMARY KEY,
    account    TEXT NOT NULL REFERENCES accounts (id),
    key_id     TEXT NOT NULL,
    agent_id   TEXT NOT NULL,
    reserved   INTEGER NOT NULL CHECK (reserved >= 0),
    fallback   INTEGER NOT NULL,
    charged    INTEGER,
    state      TEXT NOT NULL CHECK (state IN ('pending', 'posted', 'voided')),
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    settled_at INTEGER
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
    status       INTEGER,
    content_type TEXT,
    response     BLOB,
    created_at   INTEGER NOT NULL,
    locked_until INTEGER NOT NULL,
    PRIMARY KEY (account, idem_key)
);
CREATE TABLE counters (
    name  TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
INSERT INTO counters (name, value) VALUES ('revocations', 0);
"#,
    ),
    // Conversations and transcripts (src/store/conversations.rs).
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
    archived   INTEGER NOT NULL DEFAULT 0,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (account, agent_id, id)
);
CREATE INDEX conversations_list ON conversations (account, agent_id, created_at, id);
CREATE TABLE messages (
    id              TEXT PRIMARY KEY,
    account         TEXT NOT NULL,
    agent_id        TEXT NOT NULL,
    conversation_id TEXT NOT NULL,
    seq             INTEGER NOT NULL,
    role            TEXT NOT NULL CHECK (role IN ('user', 'assistant')),
    content         TEXT NOT NULL,
    tool_calls      TEXT,
    credits         INTEGER,
    created_at      INTEGER NOT NULL,
    read_at         INTEGER,
    UNIQUE (account, agent_id, conversation_id, seq)
);
CREATE INDEX messages_inbox ON messages (account, agent_id, read_at, created_at, id);
"#,
    ),
    (
        3,
        // Key rates are real numbers. `rate_per_second` keeps the rate rounded up, as binaries
        // before this version read it (an integer), so they go on working beside newer ones.
        "ALTER TABLE api_keys ADD COLUMN rate_per_second_exact REAL;",
    ),
    // chatbase `userId`, fixed when a conversation is opened (SPEC §11).
    (4, "ALTER TABLE conversations ADD COLUMN user_id TEXT;"),
    // An answer kept only up to `[server] max_answer_bytes` is marked.
    (
        5,
        "ALTER TABLE messages ADD COLUMN truncated INTEGER NOT NULL DEFAULT 0;",
    ),
    // Each message's parts in the AI SDK `UIMessage` form (SPEC §8); rows written before hold
    // their text as one text part.
    (
        6,
        r#"
ALTER TABLE messages ADD COLUMN parts TEXT;
UPDATE messages SET parts = CASE
    WHEN content = '' THEN '[]'
    ELSE json_array(json_object('type', 'text', 'text', content))
END;
"#,
    ),
];

/// The newest schema version this binary knows.
pub(crate) fn latest() -> i64 {
    MIGRATIONS.last().map_or(0, |m| m.0)
}
