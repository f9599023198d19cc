//! The conversation store on both backends: what the gateway's history, conversations,
//! sessions and inbox endpoints read and write. On PostgreSQL two handles (two replicas)
//! record into one conversation at once; messages keep their order and never collide.

mod policy_support;

use agentgate::credits::LedgerConfig;
use agentgate::store::{
    now_ms, ConversationOutcome, ConversationWrite, Exchange, NewMessage, StoreError,
};
use policy_support::{fixture_on, Backend};

fn message(id: String, content: String) -> NewMessage {
    NewMessage {
        id,
        content,
        tool_calls: None,
        credits: None,
        created_at: now_ms(),
        truncated: false,
        parts: None,
    }
}

fn exchange(conversation: &str, turn: usize) -> Exchange {
    Exchange {
        account: "acct".into(),
        agent_id: "agent".into(),
        conversation_id: conversation.into(),
        front: "agents".into(),
        backend_id: Some(format!("backend-{conversation}")),
        title: Some("first words".into()),
        user_id: None,
        user: Some(message(
            format!("u{turn}-{}", uuid::Uuid::new_v4()),
            format!("question {turn} — naïve 👩‍👩‍👧"),
        )),
        assistant: Some(NewMessage {
            credits: Some(1000 + turn as i64),
            tool_calls: Some(format!(r#"[{{"toolCallId":"t{turn}"}}]"#)),
            ..message(
                format!("a{turn}-{}", uuid::Uuid::new_v4()),
                format!("answer {turn} — 日本語"),
            )
        }),
        now: now_ms(),
    }
}

async fn exchanges_from_two_replicas_keep_their_order(backend: Backend) {
    let Some(fx) = fixture_on(backend, LedgerConfig::default()).await else {
        return;
    };
    let second = fx.second_handle().await;
    let mut tasks = Vec::new();
    for turn in 0..20 {
        let store = if turn % 2 == 0 {
            fx.store.clone()
        } else {
            second.clone()
        };
        tasks.push(tokio::spawn(async move {
            store.record_exchange(exchange("c1", turn)).await
        }));
    }
    for t in tasks {
        t.await.expect("task").expect("recorded");
    }
    let newest_first = fx
        .store
        .history("acct", "agent", "c1", None, 100)
        .await
        .expect("history");
    assert_eq!(newest_first.len(), 40);
    let mut oldest_first = newest_first;
    oldest_first.reverse();
    for (i, pair) in oldest_first.chunks(2).enumerate() {
        let (user, answer) = (&pair[0], &pair[1]);
        assert_eq!((user.seq, answer.seq), (2 * i as i64 + 1, 2 * i as i64 + 2));
        assert_eq!(
            (user.role.as_str(), answer.role.as_str()),
            ("user", "assistant")
        );
        // Each question is followed by its own answer: one exchange, one transaction.
        let turn: usize = user.id[1..user.id.find('-').unwrap()].parse().unwrap();
        assert_eq!(user.content, format!("question {turn} — naïve 👩‍👩‍👧"));
        assert_eq!(answer.content, format!("answer {turn} — 日本語"));
        assert_eq!(answer.credits, Some(1000 + turn as i64));
        assert_eq!(
            answer.tool_calls.as_deref(),
            Some(format!(r#"[{{"toolCallId":"t{turn}"}}]"#).as_str())
        );
    }
    // Paging back from the oldest page's start.
    let page = fx
        .store
        .history("acct", "agent", "c1", Some(5), 100)
        .await
        .expect("history page");
    assert_eq!(page.iter().map(|m| m.seq).collect::<Vec<_>>(), [4, 3, 2, 1]);

    let conv = fx
        .store
        .conversation("acct", "agent", "c1")
        .await
        .expect("read")
        .expect("exists");
    assert_eq!(conv.backend_id.as_deref(), Some("backend-c1"));
    assert_eq!(conv.title.as_deref(), Some("first words"));
    // Another account does not see it.
    assert!(fx
        .store
        .conversation("other", "agent", "c1")
        .await
        .expect("read")
        .is_none());
}
on_both_stores!(
    two_replicas_record_in_order,
    exchanges_from_two_replicas_keep_their_order
);

async fn create_update_list_inbox_delete(backend: Backend) {
    let Some(fx) = fixture_on(backend, LedgerConfig::default()).await else {
        return;
    };
    let s = &fx.store;
    let create = |id: &str, title: &str| ConversationWrite::Create {
        account: "acct".into(),
        agent_id: "agent".into(),
        id: id.into(),
        front: "agents".into(),
        title: Some(title.into()),
        now: now_ms(),
    };
    for (id, title) in [("a", "alpha"), ("b", "beta"), ("c", "gamma")] {
        match s
            .conversation_write(create(id, title))
            .await
            .expect("create")
        {
            ConversationOutcome::Conversation(Some(c)) => assert_eq!(c.id, id),
            other => panic!("unexpected {other:?}"),
        }
        tokio::time::sleep(std::time::Duration::from_millis(3)).await;
    }
    assert!(matches!(
        s.conversation_write(create("a", "again")).await,
        Err(StoreError::Duplicate(_))
    ));

    let renamed = s
        .conversation_write(ConversationWrite::Update {
            account: "acct".into(),
            agent_id: "agent".into(),
            id: "b".into(),
            title: Some("beta two".into()),
            archived: Some(true),
            now: now_ms(),
        })
        .await
        .expect("update");
    match renamed {
        ConversationOutcome::Conversation(Some(c)) => {
            assert_eq!(c.title.as_deref(), Some("beta two"));
            assert!(c.archived);
        }
        other => panic!("unexpected {other:?}"),
    }
    let missing = s
        .conversation_write(ConversationWrite::Update {
            account: "other".into(),
            agent_id: "agent".into(),
            id: "b".into(),
            title: Some("stolen".into()),
            archived: None,
            now: now_ms(),
        })
        .await
        .expect("update");
    assert_eq!(missing, ConversationOutcome::Conversation(None));

    // Newest first, paged; the archived filter.
    let first = s
        .list_conversations("acct", "agent", None, None, 2)
        .await
        .expect("list");
    assert_eq!(
        first.iter().map(|c| c.id.as_str()).collect::<Vec<_>>(),
        ["c", "b"]
    );
    let after = (first[1].created_at, first[1].id.clone());
    let rest = s
        .list_conversations("acct", "agent", None, Some(after), 2)
        .await
        .expect("list");
    assert_eq!(
        rest.iter().map(|c| c.id.as_str()).collect::<Vec<_>>(),
        ["a"]
    );
    let live = s
        .list_conversations("acct", "agent", Some(false), None, 10)
        .await
        .expect("list");
    assert_eq!(
        live.iter().map(|c| c.id.as_str()).collect::<Vec<_>>(),
        ["c", "a"]
    );

    // Inbox: three answers unread, one marked by id, then the rest.
    for (conv, turn) in [("a", 1), ("a", 2), ("c", 3)] {
        s.record_exchange(exchange(conv, turn))
            .await
            .expect("record");
    }
    let inbox = s.inbox("acct", "agent", None, 10).await.expect("inbox");
    assert_eq!(inbox.len(), 3);
    assert!(inbox.iter().all(|m| m.role == "assistant"));
    let marked = s
        .conversation_write(ConversationWrite::MarkRead {
            account: "acct".into(),
            agent_id: "agent".into(),
            message_ids: Some(vec![inbox[0].id.clone(), "no-such-id".into()]),
            now: now_ms(),
        })
        .await
        .expect("mark");
    assert_eq!(marked, ConversationOutcome::Marked(1));
    let mark_all = ConversationWrite::MarkRead {
        account: "acct".into(),
        agent_id: "agent".into(),
        message_ids: None,
        now: now_ms(),
    };
    assert_eq!(
        s.conversation_write(mark_all.clone()).await.expect("mark"),
        ConversationOutcome::Marked(2)
    );
    assert_eq!(
        s.conversation_write(mark_all).await.expect("mark"),
        ConversationOutcome::Marked(0)
    );
    assert!(s.inbox("acct", "agent", None, 10).await.unwrap().is_empty());

    // Delete takes the messages with it.
    let delete = |account: &str| ConversationWrite::Delete {
        account: account.into(),
        agent_id: "agent".into(),
        id: "a".into(),
    };
    assert_eq!(
        s.conversation_write(delete("other")).await.expect("delete"),
        ConversationOutcome::Deleted(false)
    );
    assert_eq!(
        s.conversation_write(delete("acct")).await.expect("delete"),
        ConversationOutcome::Deleted(true)
    );
    assert!(s
        .conversation("acct", "agent", "a")
        .await
        .unwrap()
        .is_none());
    assert!(s
        .history("acct", "agent", "a", None, 10)
        .await
        .unwrap()
        .is_empty());
    assert_eq!(
        s.history("acct", "agent", "c", None, 10)
            .await
            .unwrap()
            .len(),
        2
    );
}
on_both_stores!(conversation_lifecycle, create_update_list_inbox_delete);

/// chatbase `userId` is kept from the exchange that opened the conversation: a later exchange
/// carrying another leaves it as it is (SPEC §11).
async fn user_id_is_set_when_a_conversation_opens(backend: Backend) {
    let Some(fx) = fixture_on(backend, LedgerConfig::default()).await else {
        return;
    };
    let s = &fx.store;
    for (turn, user_id) in [(0, Some("alice")), (1, Some("bob")), (2, None)] {
        let x = Exchange {
            user_id: user_id.map(str::to_owned),
            ..exchange("u", turn)
        };
        s.record_exchange(x).await.expect("recorded");
        let row = s.conversation("acct", "agent", "u").await.unwrap().unwrap();
        assert_eq!(row.user_id.as_deref(), Some("alice"), "turn {turn}");
    }
    s.record_exchange(exchange("n", 0)).await.expect("recorded");
    let row = s.conversation("acct", "agent", "n").await.unwrap().unwrap();
    assert_eq!(row.user_id, None);
}
on_both_stores!(user_id_immutable, user_id_is_set_when_a_conversation_opens);

/// A message's AI SDK parts are stored as given and read back; rows written before migration 6
/// get their text as one `text` part when it runs (undone here on the raw database, then run
/// again by a new handle).
async fn parts_are_kept_and_old_rows_migrate(backend: Backend) {
    let Some(fx) = fixture_on(backend, LedgerConfig::default()).await else {
        return;
    };
    let parts = r#"[{"type":"step-start"},{"type":"text","text":"answer","state":"done"},{"type":"data-x","id":"d","data":{"n":[1,null]}}]"#;
    let mut x = exchange("p1", 1);
    if let Some(answer) = x.assistant.as_mut() {
        answer.parts = Some(parts.to_owned());
    }
    fx.store.record_exchange(x).await.expect("recorded");
    let newest_first = fx
        .store
        .history("acct", "agent", "p1", None, 10)
        .await
        .expect("history");
    assert_eq!(newest_first[0].parts.as_deref(), Some(parts));
    assert_eq!(newest_first[1].parts, None);

    let undo =
        "ALTER TABLE messages DROP COLUMN parts; DELETE FROM schema_version WHERE version = 6;";
    match backend {
        Backend::Sqlite => rusqlite::Connection::open(fx.path())
            .expect("open")
            .execute_batch(undo)
            .expect("migration 6 undone"),
        Backend::Postgres => {
            let (client, conn) = tokio_postgres::connect(&fx.store_url, tokio_postgres::NoTls)
                .await
                .expect("connect");
            tokio::spawn(conn);
            client
                .batch_execute(undo)
                .await
                .expect("migration 6 undone");
        }
    }
    let migrated = fx
        .second_handle()
        .await
        .history("acct", "agent", "p1", None, 10)
        .await
        .expect("history");
    let parts_of = |i: usize| -> serde_json::Value {
        serde_json::from_str(migrated[i].parts.as_deref().expect("parts set")).expect("JSON")
    };
    assert_eq!(
        parts_of(0),
        serde_json::json!([{ "type": "text", "text": "answer 1 — 日本語" }])
    );
    assert_eq!(
        parts_of(1),
        serde_json::json!([{ "type": "text", "text": "question 1 — naïve 👩‍👩‍👧" }])
    );
}
on_both_stores!(message_parts, parts_are_kept_and_old_rows_migrate);
