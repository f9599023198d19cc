//! Both stores end with the same schema: after every migration, SQLite and PostgreSQL have the
//! same tables (but the PostgreSQL-only lease tables) with the same columns, each column's
//! type mapped per dialect, and the same nullability. Read from the real databases' catalogs,
//! not from the migration text.

mod policy_support;

use std::collections::BTreeMap;

use agentgate::credits::LedgerConfig;
use agentgate::store::POSTGRES_ONLY_TABLES;
use policy_support::{fixture_on, Backend, Fixture};

/// Column name → (type as SQLite declares it, NOT NULL), per table.
type Schema = BTreeMap<String, BTreeMap<String, (String, bool)>>;

/// The schema of a SQLite store file, from `sqlite_master` and `pragma_table_info`.
fn sqlite_schema(path: &std::path::Path) -> Schema {
    let conn = rusqlite::Connection::open(path).expect("open the store file");
    let mut stmt = conn
        .prepare(
            "SELECT m.name, p.name, p.type, p.\"notnull\" OR p.pk > 0
             FROM sqlite_master m, pragma_table_info(m.name) p
             WHERE m.type = 'table' AND m.name NOT LIKE 'sqlite_%'",
        )
        .expect("prepare");
    let rows = stmt
        .query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, bool>(3)?,
            ))
        })
        .expect("query");
    let mut schema = Schema::new();
    for row in rows {
        let (table, column, ty, not_null) = row.expect("row");
        schema
            .entry(table)
            .or_default()
            .insert(column, (ty.to_uppercase(), not_null));
    }
    schema
}

/// A PostgreSQL type as SQLite declares the same column (the mapping of
/// `src/store/schema.rs`: `{INT}`, `{BOOL}`, `{REAL}`, `{BLOB}`).
fn as_sqlite_type(pg: &str) -> String {
    match pg {
        "bigint" | "boolean" => "INTEGER".to_owned(),
        "double precision" => "REAL".to_owned(),
        "bytea" => "BLOB".to_owned(),
        "text" => "TEXT".to_owned(),
        other => format!("unmapped postgres type {other}"),
    }
}

/// The schema of a PostgreSQL store, from `information_schema`, its types mapped to SQLite's.
async fn postgres_schema(url: &str) -> Schema {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .expect("connect");
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let rows = client
        .query(
            "SELECT table_name::text, column_name::text, data_type::text, is_nullable = 'NO'
             FROM information_schema.columns WHERE table_schema = current_schema()",
            &[],
        )
        .await
        .expect("columns");
    let mut schema = Schema::new();
    for r in rows {
        let ty: String = r.get(2);
        schema
            .entry(r.get(0))
            .or_default()
            .insert(r.get(1), (as_sqlite_type(&ty), r.get(3)));
    }
    for table in POSTGRES_ONLY_TABLES {
        assert!(
            schema.remove(*table).is_some(),
            "{table} exists on postgres"
        );
    }
    schema
}

/// Every difference between the two, one line each; empty when they agree.
fn differences(sqlite: &Schema, postgres: &Schema) -> Vec<String> {
    let mut out = Vec::new();
    let tables: std::collections::BTreeSet<&String> =
        sqlite.keys().chain(postgres.keys()).collect();
    for table in tables {
        let (Some(s), Some(p)) = (sqlite.get(table), postgres.get(table)) else {
            let only = if sqlite.contains_key(table) {
                "sqlite"
            } else {
                "postgres"
            };
            out.push(format!("table {table} only on {only}"));
            continue;
        };
        let columns: std::collections::BTreeSet<&String> = s.keys().chain(p.keys()).collect();
        for column in columns {
            match (s.get(column), p.get(column)) {
                (Some(a), Some(b)) if a == b => {}
                (Some(a), Some(b)) => {
                    out.push(format!("{table}.{column}: sqlite {a:?}, postgres {b:?}"))
                }
                (Some(_), None) => out.push(format!("{table}.{column} only on sqlite")),
                (None, _) => out.push(format!("{table}.{column} only on postgres")),
            }
        }
    }
    out
}

async fn both() -> Option<(Fixture, Fixture)> {
    let sqlite = fixture_on(Backend::Sqlite, LedgerConfig::default()).await?;
    let postgres = fixture_on(Backend::Postgres, LedgerConfig::default()).await?;
    Some((sqlite, postgres))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_stores_have_the_same_tables_and_columns() {
    let Some((sqlite, postgres)) = both().await else {
        return;
    };
    let s = sqlite_schema(&sqlite.path());
    let p = postgres_schema(&postgres.store_url).await;
    // Not vacuous: the tables the ledger and the transcripts use are all there.
    for table in [
        "accounts",
        "grants",
        "api_keys",
        "reservations",
        "idempotency",
        "counters",
        "conversations",
        "messages",
        "schema_version",
    ] {
        assert!(s.contains_key(table), "{table} on sqlite");
    }
    assert_eq!(differences(&s, &p), Vec::<String>::new());
}

/// The comparison sees a column one store lacks (here dropped from the real SQLite file), and
/// a type that differs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_column_is_a_difference() {
    let Some((sqlite, postgres)) = both().await else {
        return;
    };
    let path = sqlite.path();
    drop(sqlite.ledger);
    drop(sqlite.store);
    let conn = rusqlite::Connection::open(&path).expect("open");
    conn.execute_batch("ALTER TABLE conversations DROP COLUMN user_id")
        .expect("drop a column");
    drop(conn);
    let s = sqlite_schema(&path);
    let mut p = postgres_schema(&postgres.store_url).await;
    assert_eq!(
        differences(&s, &p),
        vec!["conversations.user_id only on postgres".to_owned()]
    );
    p.get_mut("messages")
        .expect("messages")
        .insert("seq".into(), ("TEXT".into(), true));
    let diff = differences(&s, &p);
    assert_eq!(diff.len(), 2, "{diff:?}");
    assert!(
        diff[1].starts_with("messages.seq: sqlite (\"INTEGER\", true)"),
        "{diff:?}"
    );
}
