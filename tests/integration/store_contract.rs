//! The store contract: every storage port method, below HTTP, against both backends (the
//! embedded SQLite in a temp dir and a real PostgreSQL), with the same assertions. Each
//! test is written once and instantiated per backend by `contract!` at the bottom.

use std::sync::Arc;
use std::time::Duration;

use switchboard::domain::allowlist::IpAllowlist;
use switchboard::domain::connect::{ConnectSession, PendingConsent, StoredStatus};
use switchboard::domain::console::{ConsoleActor, ConsoleActorRef};
use switchboard::domain::data_connection::{
    ClientType, DataConnection, NewDataConnection, TeamScope,
};
use switchboard::domain::integration::{
    ConnectionState, Environment, Health as ConnectionHealth, IdentityType, IntegrationConnection,
    ListFilter,
};
use switchboard::domain::ports::*;
use switchboard::domain::time::Timestamp;
use switchboard::domain::token::{TokenScope, User};
use switchboard::store::{self, SqlStore};

use crate::common::postgres::Postgres;

const WAIT: Duration = Duration::from_secs(10);

/// A fresh store of one backend; the temp dir (SQLite) lives as long as the store.
pub struct Fresh {
    pub store: Arc<SqlStore>,
    _dir: Option<tempfile::TempDir>,
}

pub async fn sqlite_store() -> Fresh {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("contract.db").display());
    Fresh {
        store: Arc::new(store::sqlite::open(&url, WAIT).await.unwrap()),
        _dir: Some(dir),
    }
}

pub async fn postgres_store() -> Fresh {
    let url = Postgres::shared().create_database();
    Fresh {
        store: Arc::new(store::postgres::open(&url, true, WAIT).await.unwrap()),
        _dir: None,
    }
}

fn hash(n: u8) -> [u8; 32] {
    [n; 32]
}

fn new_connection(username: &str, teams: TeamScope) -> NewDataConnection {
    NewDataConnection {
        client_type: ClientType::ClickHouse,
        note: Some(format!("note of {username}")),
        created_at: Timestamp::from_millis(1_700_000_000_123),
        valid_until: Some(Timestamp::from_millis(1_900_000_000_000)),
        region_id: "eu-nbg-2".into(),
        host: "gw.example".into(),
        port: 443,
        username: username.into(),
        password_hash: hash(username.len() as u8),
        ip_allowlist: IpAllowlist::new(vec!["10.0.0.0/8".parse().unwrap(), "::1".parse().unwrap()]),
        teams,
        created_by: None,
    }
}

fn integration(
    id: &str,
    environment: Environment,
    created_at: i64,
    tags: &[&str],
) -> IntegrationConnection {
    IntegrationConnection {
        id: id.into(),
        environment,
        platform: if created_at % 2 == 0 {
            "resend"
        } else {
            "stripe"
        }
        .into(),
        platform_version: "1.0.0".into(),
        name: Some(format!("name-{id}")),
        key: format!("{}::resend::default::{id}", environment.as_str()),
        identity: format!("user-{}", created_at % 3),
        identity_type: IdentityType::User,
        tags: tags.iter().map(|t| t.to_string()).collect(),
        version: "1.0.0".into(),
        active: true,
        state: ConnectionState::Unknown,
        created_at,
        credential_generation: 1,
        health: ConnectionHealth::default(),
    }
}

fn ids(rows: &[IntegrationConnection]) -> Vec<&str> {
    rows.iter().map(|c| c.id.as_str()).collect()
}

async fn changes(store: &SqlStore) -> Vec<(Entity, String)> {
    let (changes, _) = store.changes_after(ChangeSeq(0), 1000).await.unwrap();
    changes.into_iter().map(|c| (c.entity, c.id)).collect()
}

pub async fn meta(store: Arc<SqlStore>) {
    assert_eq!(store.get_meta("k").await.unwrap(), None);
    assert_eq!(store.init_meta("k", b"first").await.unwrap(), b"first");
    assert_eq!(
        store.init_meta("k", b"second").await.unwrap(),
        b"first",
        "the first value stays"
    );
    store.set_meta("k", b"third").await.unwrap();
    assert_eq!(store.get_meta("k").await.unwrap().unwrap(), b"third");
    store.ping().await.unwrap();
}

pub async fn tokens(store: Arc<SqlStore>) {
    let user = store.ensure_user("a@example.com").await.unwrap();
    assert_eq!(
        store.ensure_user("a@example.com").await.unwrap(),
        user,
        "the same user again"
    );
    assert_ne!(
        store.ensure_user("b@example.com").await.unwrap().id,
        user.id
    );

    assert!(store.find_api_token(&hash(1)).await.unwrap().is_none());
    assert!(store.insert_first_api_token(&hash(1)).await.unwrap());
    assert!(
        !store.insert_first_api_token(&hash(2)).await.unwrap(),
        "only on a database without tokens"
    );
    let global = store.find_api_token(&hash(1)).await.unwrap().unwrap();
    assert_eq!(global.scope, TokenScope::Global);
    assert!(global.user.is_none());
    assert!(store.find_api_token(&hash(2)).await.unwrap().is_none());

    let team = store
        .insert_api_token(&hash(3), TokenScope::Team(1234), Some(&user))
        .await
        .unwrap();
    assert_ne!(team, global.token_id);
    let found = store.find_api_token(&hash(3)).await.unwrap().unwrap();
    assert_eq!(found.token_id, team);
    assert_eq!(found.scope, TokenScope::Team(1234));
    assert_eq!(
        found.user,
        Some(User {
            id: user.id,
            email: "a@example.com".into()
        })
    );
    assert!(matches!(
        store
            .insert_api_token(&hash(3), TokenScope::Global, None)
            .await,
        Err(StoreError::Conflict(_))
    ));
}

pub async fn first_token_under_concurrency(store: Arc<SqlStore>) {
    // Every attempt on a connection of its own, released at once.
    let warm = (0..16).map(|_| {
        let store = store.clone();
        async move { store.ping().await.unwrap() }
    });
    futures_util::future::join_all(warm).await;
    let start = Arc::new(tokio::sync::Barrier::new(16));
    let attempts = (0..16u8).map(|i| {
        let (store, start) = (store.clone(), start.clone());
        tokio::spawn(async move {
            start.wait().await;
            store.insert_first_api_token(&hash(100 + i)).await.unwrap()
        })
    });
    let inserted = futures_util::future::join_all(attempts)
        .await
        .into_iter()
        .filter(|r| *r.as_ref().unwrap())
        .count();
    assert_eq!(
        inserted, 1,
        "exactly one of 16 concurrent bootstraps inserts"
    );
}

pub async fn data_connections(store: Arc<SqlStore>) {
    assert!(
        store
            .data_connection_credentials()
            .await
            .unwrap()
            .is_empty()
    );

    let user = store.ensure_user("maker@example.com").await.unwrap();
    let mut made = Vec::new();
    let mut last_seq = ChangeSeq(0);
    for i in 0..7 {
        let teams = if i % 2 == 0 {
            TeamScope::All
        } else {
            TeamScope::Teams(vec![1, 2])
        };
        let mut new = new_connection(&format!("user{i}"), teams.clone());
        if i == 3 {
            new.created_by = Some(user.clone());
            new.note = None;
            new.valid_until = None;
        }
        let (c, seq) = store.insert_data_connection(new).await.unwrap();
        assert!(seq > last_seq, "every write records a later change");
        last_seq = seq;
        assert_eq!(c.teams, teams);
        made.push(c);
    }
    assert!(matches!(
        store
            .insert_data_connection(new_connection("user1", TeamScope::All))
            .await,
        Err(StoreError::Conflict(_))
    ));

    // Every connection, as the snapshots load them, in id order.
    let all: Vec<i64> = made.iter().map(|c| c.id).collect();
    assert!(all.windows(2).all(|w| w[0] < w[1]));
    let mut loaded: Vec<i64> = store
        .data_connection_credentials()
        .await
        .unwrap()
        .iter()
        .map(|(c, _)| c.id)
        .collect();
    loaded.sort_unstable();
    assert_eq!(loaded, all);

    // What is read back is what was written.
    let got = store
        .get_data_connection(made[3].id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got.username, "user3");
    assert_eq!(got.note, None);
    assert_eq!(got.valid_until, None);
    assert_eq!(got.created_by, Some(user));
    assert_eq!(got.teams, TeamScope::Teams(vec![1, 2]));
    assert_eq!(got.ip_allowlist.to_strings(), ["10.0.0.0/8", "::1"]);
    assert_eq!((got.host.as_str(), got.port), ("gw.example", 443));
    assert_eq!(got.created_at, Timestamp::from_millis(1_700_000_000_123));
    let with_note = store
        .get_data_connection(made[0].id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(with_note.note.as_deref(), Some("note of user0"));
    assert_eq!(
        with_note.valid_until,
        Some(Timestamp::from_millis(1_900_000_000_000))
    );
    assert!(store.get_data_connection(999_999).await.unwrap().is_none());

    let (c, h) = store
        .data_connection_credential(made[2].id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (c.username.as_str(), h.current, h.previous),
        ("user2", hash(5), None)
    );
    assert_eq!(store.data_connection_credentials().await.unwrap().len(), 7);

    let seq = store.delete_data_connection(made[2].id).await.unwrap();
    assert!(seq.is_some_and(|s| s > last_seq));
    assert!(
        store
            .delete_data_connection(made[2].id)
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        store
            .data_connection_credential(made[2].id)
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(store.data_connection_credentials().await.unwrap().len(), 6);
    let recorded = changes(&store).await;
    assert_eq!(recorded.len(), 8, "7 creates and 1 delete: {recorded:?}");
    assert!(recorded.iter().all(|(e, _)| *e == Entity::DataConnection));
    assert_eq!(recorded[7].1, made[2].id.to_string());
}

pub async fn vault_secrets(store: Arc<SqlStore>) {
    assert!(store.find_vault_secret(&hash(1)).await.unwrap().is_none());
    assert!(
        store
            .insert_first_vault_secret(Environment::Test, &hash(1))
            .await
            .unwrap()
            .is_some()
    );
    assert!(
        store
            .insert_first_vault_secret(Environment::Test, &hash(2))
            .await
            .unwrap()
            .is_none(),
        "the test environment has one already"
    );
    assert!(
        store
            .insert_first_vault_secret(Environment::Live, &hash(3))
            .await
            .unwrap()
            .is_some()
    );
    store
        .insert_vault_secret(Environment::Test, &hash(4))
        .await
        .unwrap();
    assert!(matches!(
        store.insert_vault_secret(Environment::Live, &hash(4)).await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(
        store
            .find_vault_secret(&hash(3))
            .await
            .unwrap()
            .map(|s| s.environment),
        Some(Environment::Live)
    );
    assert_eq!(
        store
            .find_vault_secret(&hash(4))
            .await
            .unwrap()
            .map(|s| s.environment),
        Some(Environment::Test)
    );
    let all = store.vault_secrets().await.unwrap();
    assert_eq!(all.len(), 3);
    let one = store.vault_secret(all[1].id).await.unwrap().unwrap();
    assert_eq!(one, all[1]);
    let recorded = changes(&store).await;
    assert_eq!(
        recorded,
        all.iter()
            .map(|s| (Entity::VaultSecret, s.id.to_string()))
            .collect::<Vec<_>>()
    );
}

pub async fn integrations(store: Arc<SqlStore>) {
    // 12 test connections, created at 1..=12 (some at the same instant), and one live one.
    let mut made = Vec::new();
    for i in 1..=12i64 {
        let created_at = if i == 6 { 5 } else { i };
        let tags: &[&str] = match i % 3 {
            0 => &["a", "b"],
            1 => &["a"],
            _ => &[],
        };
        let c = integration(&format!("id-{i:02}"), Environment::Test, created_at, tags);
        store.insert_integration(&c, &[i as u8; 8]).await.unwrap();
        made.push(c);
    }
    let live = integration("id-live", Environment::Live, 100, &["a"]);
    store.insert_integration(&live, b"live").await.unwrap();
    let mut dup = integration("id-other", Environment::Test, 1, &[]);
    dup.key = made[0].key.clone();
    assert!(matches!(
        store.insert_integration(&dup, b"x").await,
        Err(StoreError::Conflict(_))
    ));

    // Newest first, ties broken by id (descending), environment-scoped.
    let everything = ListFilter {
        active: true,
        ..ListFilter::default()
    };
    let (rows, total) = store
        .list_integrations(Environment::Test, &everything, 0, 100)
        .await
        .unwrap();
    assert_eq!(total, 12);
    let expected = [
        "id-12", "id-11", "id-10", "id-09", "id-08", "id-07", "id-06", "id-05", "id-04", "id-03",
        "id-02", "id-01",
    ];
    assert_eq!(ids(&rows), expected);
    assert_eq!(rows[0], made[11], "rows read back as written");
    // Pages are slices of that order, the total the same on each.
    for (offset, limit) in [(0, 5), (5, 5), (10, 5), (11, 1), (12, 5)] {
        let (page, total) = store
            .list_integrations(Environment::Test, &everything, offset, limit)
            .await
            .unwrap();
        assert_eq!(total, 12);
        let end = (offset + limit).min(12) as usize;
        assert_eq!(ids(&page), expected[offset as usize..end]);
        let alone = store
            .integration_page(Environment::Test, &everything, offset, limit)
            .await
            .unwrap();
        assert_eq!(alone, page, "the page alone is the same page");
    }
    // Filters, alone and together.
    let tag_a = ListFilter {
        tags: vec!["a".into()],
        ..everything.clone()
    };
    let (rows, total) = store
        .list_integrations(Environment::Test, &tag_a, 0, 100)
        .await
        .unwrap();
    assert_eq!(total, 8);
    assert_eq!(
        ids(&rows),
        [
            "id-12", "id-10", "id-09", "id-07", "id-06", "id-04", "id-03", "id-01"
        ]
    );
    let tags_ab = ListFilter {
        tags: vec!["a".into(), "b".into()],
        ..everything.clone()
    };
    let (rows, total) = store
        .list_integrations(Environment::Test, &tags_ab, 1, 2)
        .await
        .unwrap();
    assert_eq!((ids(&rows), total), (vec!["id-09", "id-06"], 4));
    let narrow = ListFilter {
        tags: vec!["a".into()],
        platform: Some("resend".into()),
        identity: Some("user-1".into()),
        ..everything.clone()
    };
    let (rows, total) = store
        .list_integrations(Environment::Test, &narrow, 0, 100)
        .await
        .unwrap();
    assert_eq!((ids(&rows), total), (vec!["id-10", "id-04"], 2));
    let by_keys = ListFilter {
        keys: vec![made[1].key.clone(), made[2].key.clone(), live.key.clone()],
        identity_type: Some(IdentityType::User),
        ..everything.clone()
    };
    let (rows, total) = store
        .list_integrations(Environment::Test, &by_keys, 0, 100)
        .await
        .unwrap();
    assert_eq!((ids(&rows), total), (vec!["id-03", "id-02"], 2));
    let (rows, _) = store
        .list_integrations(Environment::Live, &tag_a, 0, 100)
        .await
        .unwrap();
    assert_eq!(ids(&rows), ["id-live"]);

    // Gets are environment-scoped.
    assert_eq!(
        store
            .get_integration(Environment::Test, "id-03")
            .await
            .unwrap(),
        Some(made[2].clone())
    );
    assert!(
        store
            .get_integration(Environment::Live, "id-03")
            .await
            .unwrap()
            .is_none()
    );

    // Updates only over the version read; tags are replaced and filtered on at once.
    let mut changed = made[0].clone();
    changed.tags = vec!["b".into()];
    changed.name = None;
    changed.active = false;
    changed.version = "1.0.1".into();
    assert!(
        store
            .update_integration(&changed, "9.9.9")
            .await
            .unwrap()
            .is_none(),
        "a stale version changes nothing"
    );
    assert!(
        store
            .update_integration(&changed, "1.0.0")
            .await
            .unwrap()
            .is_some()
    );
    let (_, total) = store
        .list_integrations(Environment::Test, &tag_a, 0, 100)
        .await
        .unwrap();
    assert_eq!(total, 7);
    let inactive = ListFilter {
        active: false,
        tags: vec!["b".into()],
        ..ListFilter::default()
    };
    let (rows, _) = store
        .list_integrations(Environment::Test, &inactive, 0, 100)
        .await
        .unwrap();
    assert_eq!(rows, [changed.clone()]);

    // State and credentials.
    store
        .set_integration_state("id-02", ConnectionState::Failed, Some("401"), 77)
        .await
        .unwrap();
    store
        .set_integration_state("id-02", ConnectionState::Operational, None, 78)
        .await
        .unwrap();
    let c = store
        .get_integration(Environment::Test, "id-02")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(c.state, ConnectionState::Operational);
    assert_eq!(
        (c.health.last_error.as_deref(), c.health.last_error_at),
        (Some("401"), Some(77)),
        "a success keeps the last error"
    );
    store
        .set_integration_credentials("id-02", b"new-credential", Some(5_000))
        .await
        .unwrap();
    let sealed = store
        .sealed_integration_by_key(Environment::Test, &made[1].key)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(sealed.sealed, b"new-credential");
    assert_eq!(sealed.connection.state, ConnectionState::Unknown);
    assert_eq!(sealed.connection.credential_generation, 2);
    assert_eq!(sealed.connection.health.expires_at, Some(5_000));
    assert!(
        store
            .sealed_integration_by_key(Environment::Live, &made[1].key)
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(
        store.sealed_integration("id-02").await.unwrap(),
        Some(sealed.clone())
    );
    assert_eq!(store.sealed_integrations().await.unwrap().len(), 13);

    // A re-seal applies only over the generation it read.
    assert!(
        !store
            .reseal_integration("id-02", 1, b"stale")
            .await
            .unwrap()
    );
    assert!(
        store
            .reseal_integration("id-02", 2, b"resealed")
            .await
            .unwrap()
    );
    assert_eq!(
        store
            .sealed_integration("id-02")
            .await
            .unwrap()
            .unwrap()
            .sealed,
        b"resealed"
    );

    // Deletes are environment-scoped and take the tags along.
    assert!(
        store
            .delete_integration(Environment::Live, "id-03")
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        store
            .delete_integration(Environment::Test, "id-03")
            .await
            .unwrap()
            .is_some()
    );
    assert!(store.sealed_integration("id-03").await.unwrap().is_none());
    let (_, total) = store
        .list_integrations(Environment::Test, &tags_ab, 0, 100)
        .await
        .unwrap();
    assert_eq!(total, 3);

    // Every write above was recorded, in order: 13 inserts, 1 update, 2 states, 1
    // credential, 1 re-seal, 1 delete.
    let recorded = changes(&store).await;
    assert_eq!(recorded.len(), 19, "{recorded:?}");
    assert!(recorded.iter().all(|(e, _)| *e == Entity::Integration));
    assert_eq!(recorded[13].1, "id-01");
    assert_eq!(recorded[18].1, "id-03");
}

pub async fn refresh_leases(store: Arc<SqlStore>) {
    let mut due = integration("due", Environment::Test, 1, &[]);
    due.health.expires_at = Some(1_000);
    let mut later = integration("later", Environment::Test, 2, &[]);
    later.health.expires_at = Some(900_000);
    let mut inactive = integration("inactive", Environment::Test, 3, &[]);
    inactive.health.expires_at = Some(500);
    inactive.active = false;
    for c in [&due, &later, &inactive] {
        store.insert_integration(c, b"s").await.unwrap();
    }
    let names = |rows: Vec<IntegrationConnection>| -> Vec<String> {
        rows.into_iter().map(|c| c.id).collect()
    };
    assert_eq!(
        names(store.due_refreshes(10, 2_000, 10).await.unwrap()),
        ["due"]
    );
    assert_eq!(
        names(store.due_refreshes(10, 1_000_000, 10).await.unwrap()),
        ["due", "later"],
        "soonest first"
    );

    // One owner at a time; the owner may renew; an expired lease can be taken over.
    assert!(store.try_lease_refresh("due", "a", 10, 100).await.unwrap());
    assert!(!store.try_lease_refresh("due", "b", 50, 150).await.unwrap());
    assert!(store.try_lease_refresh("due", "a", 60, 160).await.unwrap());
    assert!(
        names(store.due_refreshes(70, 2_000, 10).await.unwrap()).is_empty(),
        "a leased connection is not due"
    );
    assert!(store.try_lease_refresh("due", "b", 161, 300).await.unwrap());
    store.release_refresh_lease("due", "a").await.unwrap();
    assert!(
        !store.try_lease_refresh("due", "a", 170, 300).await.unwrap(),
        "only the owner releases"
    );
    store.release_refresh_lease("due", "b").await.unwrap();
    assert!(store.try_lease_refresh("due", "a", 170, 300).await.unwrap());

    // A failure is counted and explained and releases the owner's lease; a retry time
    // makes it due then.
    store
        .record_refresh_failure(
            "due",
            "a",
            &RefreshFailure {
                state: ConnectionState::Degraded,
                consecutive_failures: 1,
                error: "token endpoint answered 503".into(),
                at: 180,
                retry_at: Some(5_000),
            },
        )
        .await
        .unwrap();
    let c = store
        .get_integration(Environment::Test, "due")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(c.state, ConnectionState::Degraded);
    assert_eq!(
        (
            c.health.refresh_attempts,
            c.health.consecutive_failures,
            c.health.retry_at
        ),
        (1, 1, Some(5_000))
    );
    assert!(names(store.due_refreshes(4_000, 4_000, 10).await.unwrap()).is_empty());
    assert_eq!(
        names(store.due_refreshes(5_000, 5_000, 10).await.unwrap()),
        ["due"]
    );
    assert!(store.try_lease_refresh("due", "b", 190, 400).await.unwrap());

    // A refresh stores the new credential, moves the generation on, clears the failures
    // and releases only its owner's lease.
    store
        .store_refreshed_credentials("due", "a", b"fresh", 99_000, 200)
        .await
        .unwrap();
    assert!(
        !store.try_lease_refresh("due", "c", 210, 500).await.unwrap(),
        "b's lease stands"
    );
    store
        .store_refreshed_credentials("due", "b", b"fresher", 99_500, 220)
        .await
        .unwrap();
    assert!(store.try_lease_refresh("due", "c", 230, 500).await.unwrap());
    let s = store.sealed_integration("due").await.unwrap().unwrap();
    assert_eq!(s.sealed, b"fresher");
    let h = &s.connection.health;
    assert_eq!(s.connection.state, ConnectionState::Operational);
    assert_eq!(s.connection.credential_generation, 3);
    assert_eq!(
        (
            h.refresh_attempts,
            h.consecutive_failures,
            h.retry_at,
            h.expires_at,
            h.last_refresh_at
        ),
        (3, 0, None, Some(99_500), Some(220))
    );

    // Failed connections are never due.
    store
        .set_integration_state("later", ConnectionState::Failed, Some("invalid_grant"), 1)
        .await
        .unwrap();
    assert!(
        !names(store.due_refreshes(240, 1_000_000, 10).await.unwrap()).contains(&"later".into())
    );
}

pub async fn change_log(store: Arc<SqlStore>) {
    assert_eq!(store.latest_change().await.unwrap(), ChangeSeq(0));
    let mut seqs = Vec::new();
    for i in 0..5 {
        seqs.push(
            store
                .insert_vault_secret(Environment::Test, &hash(i))
                .await
                .unwrap(),
        );
    }
    assert!(seqs.windows(2).all(|w| w[0] < w[1]));
    assert_eq!(store.latest_change().await.unwrap(), seqs[4]);
    let (first, last) = store.changes_after(ChangeSeq(0), 2).await.unwrap();
    assert_eq!(first.iter().map(|c| c.seq).collect::<Vec<_>>(), seqs[..2]);
    assert_eq!(last, seqs[1]);
    let (rest, last) = store.changes_after(last, 100).await.unwrap();
    assert_eq!(rest.iter().map(|c| c.seq).collect::<Vec<_>>(), seqs[2..]);
    assert_eq!(last, seqs[4]);
    let (none, last) = store.changes_after(seqs[4], 100).await.unwrap();
    assert!(none.is_empty());
    assert_eq!(last, seqs[4]);

    // Pruning forgets old rows but never the numbering.
    let future = chrono::Utc::now().timestamp_micros() + 1_000_000;
    assert_eq!(store.prune_changes(future).await.unwrap(), 5);
    assert!(
        store
            .changes_after(ChangeSeq(0), 10)
            .await
            .unwrap()
            .0
            .is_empty()
    );
    let next = store
        .insert_vault_secret(Environment::Live, &hash(9))
        .await
        .unwrap();
    assert!(next > seqs[4]);
}

pub async fn subscription(store: Arc<SqlStore>, pushes: bool) {
    let subscribed = store.subscribe().await.unwrap();
    assert_eq!(subscribed.is_some(), pushes);
    let Some(mut signals) = subscribed else {
        return;
    };
    let seq = store
        .insert_vault_secret(Environment::Test, &hash(1))
        .await
        .unwrap();
    let signal = tokio::time::timeout(WAIT, signals.recv())
        .await
        .unwrap()
        .unwrap();
    let ChangeSignal::Changed(change) = signal else {
        panic!("expected a change, got {signal:?}");
    };
    assert_eq!((change.seq, change.entity), (seq, Entity::VaultSecret));
}

pub async fn export_import(from: Arc<SqlStore>, into: Arc<SqlStore>) {
    let user = from.ensure_user("x@example.com").await.unwrap();
    from.insert_api_token(&hash(1), TokenScope::Global, Some(&user))
        .await
        .unwrap();
    from.init_meta("fingerprint", b"abc").await.unwrap();
    let (c, _) = from
        .insert_data_connection(new_connection("moved", TeamScope::Teams(vec![7])))
        .await
        .unwrap();
    from.insert_vault_secret(Environment::Live, &hash(2))
        .await
        .unwrap();
    let i = integration("moved-i", Environment::Test, 5, &["t1", "t2"]);
    from.insert_integration(&i, b"sealed").await.unwrap();
    // Inside a rotation's overlap, with usage counted, and an endpoint made by the API.
    let overlap_until = Timestamp::from_millis(4_000_000_000_000);
    from.rotate_data_connection_password(c.id, &hash(9), Some(overlap_until))
        .await
        .unwrap()
        .unwrap();
    from.add_data_connection_usage(&[(
        c.id,
        switchboard::domain::usage::Tally {
            queries: 3,
            response_bytes: 30,
            last_used_at: 1_800_000_000_000,
        },
    )])
    .await
    .unwrap();
    let endpoint = switchboard::domain::webhook::Endpoint {
        id: "wh_moved".into(),
        source: switchboard::domain::webhook::EndpointSource::Api,
        url: url::Url::parse("https://hooks.example.com/x").unwrap(),
        events: switchboard::domain::webhook::EventFilter::All,
        created_at: Timestamp::from_millis(5),
        sealed_secret: Some(b"sealed-secret".to_vec()),
    };
    from.insert_webhook_endpoint(&endpoint).await.unwrap();
    let dump = from.export().await.unwrap();
    into.import(&dump).await.unwrap();
    assert!(matches!(
        into.import(&dump).await,
        Err(StoreError::NotEmpty(_))
    ));
    assert_eq!(
        into.get_data_connection(c.id)
            .await
            .unwrap()
            .unwrap()
            .username,
        "moved"
    );
    assert_eq!(into.data_connection_credentials().await.unwrap().len(), 1);
    let (moved, hashes) = into
        .data_connection_credential(c.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(hashes.current, hash(9));
    assert_eq!(
        hashes.previous,
        Some((hash(c.username.len() as u8), overlap_until))
    );
    assert_eq!((moved.usage.queries, moved.usage.response_bytes), (3, 30));
    let endpoints = into.webhook_endpoints().await.unwrap();
    assert_eq!(endpoints.len(), 1);
    assert_eq!(
        endpoints[0].sealed_secret.as_deref(),
        Some(&b"sealed-secret"[..])
    );
    assert_eq!(
        into.find_api_token(&hash(1)).await.unwrap().unwrap().user,
        Some(user)
    );
    assert_eq!(into.get_meta("fingerprint").await.unwrap().unwrap(), b"abc");
    assert_eq!(
        into.find_vault_secret(&hash(2))
            .await
            .unwrap()
            .map(|s| s.environment),
        Some(Environment::Live)
    );
    assert_eq!(
        into.sealed_integration("moved-i").await.unwrap().unwrap(),
        SealedIntegration {
            connection: i,
            sealed: b"sealed".to_vec()
        }
    );
    let tag = ListFilter {
        tags: vec!["t2".into()],
        active: true,
        ..ListFilter::default()
    };
    assert_eq!(
        into.list_integrations(Environment::Test, &tag, 0, 10)
            .await
            .unwrap()
            .1,
        1
    );
    // Ids move on past the imported ones.
    let (next, _) = into
        .insert_data_connection(new_connection("after", TeamScope::All))
        .await
        .unwrap();
    assert!(next.id > c.id);
}

fn session(id: &str, created_at: i64, expires_at: i64) -> ConnectSession {
    ConnectSession {
        id: id.into(),
        environment: Environment::Test,
        identity: "user-1".into(),
        identity_type: IdentityType::User,
        platforms: vec!["acme".into(), "resend".into()],
        tags: vec!["a".into(), "b, c".into()],
        name: Some("Name".into()),
        reconnect_key: Some("test::acme::default::k".into()),
        return_url: Some("https://app.example.com/back".into()),
        status: StoredStatus::Pending,
        connection_key: None,
        error: None,
        created_at,
        expires_at,
        consent: None,
    }
}

pub async fn connect_sessions(store: Arc<SqlStore>) {
    let one = session("6f7d2b8e-0000-4000-8000-000000000001", 100, 1_000);
    store.insert_connect_session(&one, &hash(1)).await.unwrap();
    assert_eq!(
        store.connect_session_by_token(&hash(1)).await.unwrap(),
        Some(one.clone())
    );
    assert_eq!(
        store.connect_session(&one.id).await.unwrap(),
        Some(one.clone())
    );
    assert_eq!(
        store.connect_session_by_token(&hash(2)).await.unwrap(),
        None
    );
    assert!(matches!(
        store
            .insert_connect_session(&session("other", 1, 2), &hash(1))
            .await,
        Err(StoreError::Conflict(_))
    ));

    // A consent starts only on a pending, unexpired session, and a later one replaces it.
    let consent = |n: u8| PendingConsent {
        platform: "acme".into(),
        state_hash: hash(n),
        sealed_verifier: vec![n; 40],
    };
    assert!(
        !store
            .begin_connect_consent(&one.id, &consent(7), 1_000)
            .await
            .unwrap()
    );
    assert!(
        store
            .begin_connect_consent(&one.id, &consent(7), 999)
            .await
            .unwrap()
    );
    assert!(
        store
            .begin_connect_consent(&one.id, &consent(8), 999)
            .await
            .unwrap()
    );
    let read = store.connect_session(&one.id).await.unwrap().unwrap();
    assert_eq!(read.consent, Some(consent(8)));

    // A claim with a stale or wrong state fails; the right one works once and forgets it.
    assert!(
        !store
            .claim_connect_session(&one.id, Some(&hash(7)), 500)
            .await
            .unwrap()
    );
    assert!(
        !store
            .claim_connect_session(&one.id, Some(&hash(8)), 1_000)
            .await
            .unwrap()
    );
    assert!(
        store
            .claim_connect_session(&one.id, Some(&hash(8)), 500)
            .await
            .unwrap()
    );
    assert!(
        !store
            .claim_connect_session(&one.id, Some(&hash(8)), 500)
            .await
            .unwrap()
    );
    assert!(
        !store
            .claim_connect_session(&one.id, None, 500)
            .await
            .unwrap()
    );
    let claimed = store.connect_session(&one.id).await.unwrap().unwrap();
    assert_eq!(
        (claimed.status, claimed.consent),
        (StoredStatus::Completing, None)
    );

    assert!(
        store
            .finish_connect_session(
                &one.id,
                StoredStatus::Completed,
                Some("key-1"),
                Some("acme"),
                None,
                600
            )
            .await
            .unwrap()
    );
    assert!(
        !store
            .finish_connect_session(&one.id, StoredStatus::Failed, None, None, Some("late"), 700)
            .await
            .unwrap()
    );
    let done = store.connect_session(&one.id).await.unwrap().unwrap();
    assert_eq!(done.status, StoredStatus::Completed);
    assert_eq!(done.connection_key.as_deref(), Some("key-1"));
    assert_eq!(done.error, None);

    // Without a consent: claimed once; a pending session fails straight from pending.
    let two = session("6f7d2b8e-0000-4000-8000-000000000002", 100, 2_000);
    let three = session("6f7d2b8e-0000-4000-8000-000000000003", 100, 3_000);
    store.insert_connect_session(&two, &hash(2)).await.unwrap();
    store
        .insert_connect_session(&three, &hash(3))
        .await
        .unwrap();
    assert!(
        store
            .claim_connect_session(&two.id, None, 1_500)
            .await
            .unwrap()
    );
    assert!(
        !store
            .claim_connect_session(&two.id, None, 1_500)
            .await
            .unwrap()
    );
    assert!(
        store
            .finish_connect_session(
                &three.id,
                StoredStatus::Failed,
                None,
                None,
                Some("why"),
                900
            )
            .await
            .unwrap()
    );
    let failed = store.connect_session(&three.id).await.unwrap().unwrap();
    assert_eq!(
        (failed.status, failed.error.as_deref()),
        (StoredStatus::Failed, Some("why"))
    );

    assert_eq!(
        store
            .delete_connect_sessions_expired_before(2_001)
            .await
            .unwrap(),
        2
    );
    assert_eq!(store.connect_session(&one.id).await.unwrap(), None);
    assert_eq!(store.connect_session(&two.id).await.unwrap(), None);
    assert!(store.connect_session(&three.id).await.unwrap().is_some());
}

pub async fn token_revocation(store: Arc<SqlStore>) {
    let user = store.ensure_user("t@example.com").await.unwrap();
    assert!(store.insert_first_api_token(&hash(1)).await.unwrap());
    let first = store
        .find_api_token(&hash(1))
        .await
        .unwrap()
        .unwrap()
        .token_id;
    let team = store
        .insert_api_token(&hash(2), TokenScope::Team(7), Some(&user))
        .await
        .unwrap();
    let listed = store.api_tokens().await.unwrap();
    assert_eq!(
        listed
            .iter()
            .map(|t| (t.id, t.scope, t.user.clone()))
            .collect::<Vec<_>>(),
        vec![
            (first, TokenScope::Global, None),
            (team, TokenScope::Team(7), Some(user.clone()))
        ],
        "oldest first, with scope and user"
    );
    assert_eq!(
        store.delete_api_token(first).await.unwrap(),
        Revoked::LastGlobalToken,
        "the last global token stays"
    );
    store
        .insert_console_session(
            "s-team",
            &hash(50),
            ConsoleActorRef::ApiToken(team),
            1,
            i64::MAX,
        )
        .await
        .unwrap();
    let before = store.latest_change().await.unwrap();
    let Revoked::Done(seq) = store.delete_api_token(team).await.unwrap() else {
        panic!("a team token is revoked");
    };
    assert!(seq > before);
    assert!(store.find_api_token(&hash(2)).await.unwrap().is_none());
    assert_eq!(
        store.console_session_by_token(&hash(50), 2).await.unwrap(),
        None,
        "its console sessions end with it"
    );
    assert_eq!(
        store.delete_api_token(team).await.unwrap(),
        Revoked::NotFound
    );
    let second = store
        .insert_api_token(&hash(3), TokenScope::Global, None)
        .await
        .unwrap();
    assert!(matches!(
        store.delete_api_token(first).await.unwrap(),
        Revoked::Done(_)
    ));
    assert_eq!(
        store.delete_api_token(second).await.unwrap(),
        Revoked::LastGlobalToken
    );
    let recorded = changes(&store).await;
    assert_eq!(
        recorded,
        vec![
            (Entity::ApiToken, team.to_string()),
            (Entity::ApiToken, first.to_string())
        ]
    );

    // Secrets: deleted with their sessions, the change recorded.
    let seq = store
        .insert_vault_secret(Environment::Live, &hash(9))
        .await
        .unwrap();
    let secret = store.find_vault_secret(&hash(9)).await.unwrap().unwrap();
    assert!(secret.created_at.as_millis() > 0);
    store
        .insert_console_session(
            "s-vault",
            &hash(51),
            ConsoleActorRef::VaultSecret(secret.id),
            1,
            i64::MAX,
        )
        .await
        .unwrap();
    let Revoked::Done(deleted) = store.delete_vault_secret(secret.id).await.unwrap() else {
        panic!("the secret is revoked");
    };
    assert!(deleted > seq);
    assert_eq!(store.find_vault_secret(&hash(9)).await.unwrap(), None);
    assert_eq!(
        store.console_session_by_token(&hash(51), 2).await.unwrap(),
        None
    );
    assert_eq!(
        store.delete_vault_secret(secret.id).await.unwrap(),
        Revoked::NotFound
    );
}

pub async fn console_sessions(store: Arc<SqlStore>) {
    let user = store.ensure_user("c@example.com").await.unwrap();
    let token = store
        .insert_api_token(&hash(1), TokenScope::Team(3), Some(&user))
        .await
        .unwrap();
    store
        .insert_vault_secret(Environment::Test, &hash(2))
        .await
        .unwrap();
    let secret = store.find_vault_secret(&hash(2)).await.unwrap().unwrap();
    for (id, h, actor, expires) in [
        ("s1", 10, ConsoleActorRef::ApiToken(token), 1_000),
        ("s2", 11, ConsoleActorRef::VaultSecret(secret.id), 2_000),
        ("s3", 12, ConsoleActorRef::ApiToken(token), 3_000),
    ] {
        store
            .insert_console_session(id, &hash(h), actor, 1, expires)
            .await
            .unwrap();
    }
    assert!(matches!(
        store
            .insert_console_session("s4", &hash(10), ConsoleActorRef::ApiToken(token), 1, 9)
            .await,
        Err(StoreError::Conflict(_))
    ));
    let s1 = store
        .console_session_by_token(&hash(10), 999)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((s1.id.as_str(), s1.expires_at), ("s1", 1_000));
    let ConsoleActor::Token(principal) = &s1.actor else {
        panic!("a token's session acts as the token");
    };
    assert_eq!(principal.token_id, token);
    assert_eq!(principal.scope, TokenScope::Team(3));
    assert_eq!(principal.user, Some(user));
    assert_eq!(
        store
            .console_session_by_token(&hash(10), 1_000)
            .await
            .unwrap(),
        None,
        "expired at its expiry"
    );
    let s2 = store
        .console_session_by_token(&hash(11), 5)
        .await
        .unwrap()
        .unwrap();
    assert!(matches!(
        s2.actor,
        ConsoleActor::Vault { secret_id, environment: Environment::Test } if secret_id == secret.id
    ));
    assert_eq!(
        store.console_session_by_token(&hash(99), 5).await.unwrap(),
        None
    );

    // A reveal is read once.
    assert_eq!(store.take_console_reveal("s2").await.unwrap(), None);
    store.set_console_reveal("s2", b"sealed-1").await.unwrap();
    store.set_console_reveal("s2", b"sealed-2").await.unwrap();
    assert_eq!(
        store.take_console_reveal("s2").await.unwrap().as_deref(),
        Some(&b"sealed-2"[..])
    );
    assert_eq!(store.take_console_reveal("s2").await.unwrap(), None);
    assert_eq!(store.take_console_reveal("nobody").await.unwrap(), None);

    store.delete_console_session("s2").await.unwrap();
    assert_eq!(
        store.console_session_by_token(&hash(11), 5).await.unwrap(),
        None
    );
    assert_eq!(
        store
            .delete_console_sessions_expired_before(2_500)
            .await
            .unwrap(),
        1,
        "s1 (s2 is gone already)"
    );
    assert!(
        store
            .console_session_by_token(&hash(12), 5)
            .await
            .unwrap()
            .is_some()
    );
}

pub async fn team_data_connections(store: Arc<SqlStore>) {
    let mut ours = Vec::new();
    for (i, teams) in [
        TeamScope::Teams(vec![1]),
        TeamScope::Teams(vec![1, 2]),
        TeamScope::All,
        TeamScope::Teams(vec![2]),
        TeamScope::Teams(vec![1]),
        TeamScope::Teams(vec![1]),
    ]
    .into_iter()
    .enumerate()
    {
        let only_one = teams == TeamScope::Teams(vec![1]);
        let (c, _) = store
            .insert_data_connection(new_connection(&format!("team{i}"), teams))
            .await
            .unwrap();
        if only_one {
            ours.push(c.id);
        }
    }
    let ids = |page: Vec<DataConnection>| page.into_iter().map(|c| c.id).collect::<Vec<_>>();
    let (page, total) = store.list_team_data_connections(1, 0, 2).await.unwrap();
    assert_eq!((ids(page), total), (ours[..2].to_vec(), 3));
    let (page, total) = store.list_team_data_connections(1, 2, 2).await.unwrap();
    assert_eq!((ids(page), total), (ours[2..].to_vec(), 3));
    let (page, total) = store.list_team_data_connections(9, 0, 50).await.unwrap();
    assert_eq!((page.len(), total), (0, 0));
    let (page, _) = store.list_team_data_connections(2, 0, 50).await.unwrap();
    assert_eq!(page.len(), 1, "only the connection of team 2 alone");
}

pub async fn data_connection_changes(store: Arc<SqlStore>) {
    let (made, _) = store
        .insert_data_connection(new_connection("changing", TeamScope::Teams(vec![3])))
        .await
        .unwrap();
    let before = store.latest_change().await.unwrap();

    // Only what the update names changes.
    let (c, seq) = store
        .update_data_connection(
            made.id,
            &ConnectionUpdate {
                note: Some(Some("new note".into())),
                ..ConnectionUpdate::default()
            },
        )
        .await
        .unwrap()
        .unwrap();
    assert!(seq > before);
    assert_eq!(c.note.as_deref(), Some("new note"));
    assert_eq!(c.valid_until, made.valid_until);
    assert_eq!(c.ip_allowlist, made.ip_allowlist);
    let (c, _) = store
        .update_data_connection(
            made.id,
            &ConnectionUpdate {
                note: Some(None),
                valid_until: Some(None),
                ip_allowlist: Some(IpAllowlist::new(vec!["192.0.2.0/24".parse().unwrap()])),
            },
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!((c.note, c.valid_until), (None, None));
    assert_eq!(c.ip_allowlist.to_strings(), vec!["192.0.2.0/24"]);
    assert_eq!(c.teams, TeamScope::Teams(vec![3]), "teams never change");
    let (c, _) = store
        .update_data_connection(
            made.id,
            &ConnectionUpdate {
                valid_until: Some(Some(Timestamp::from_millis(2_000_000_000_000))),
                ..ConnectionUpdate::default()
            },
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        c.valid_until,
        Some(Timestamp::from_millis(2_000_000_000_000))
    );
    assert_eq!(
        store
            .get_data_connection(made.id)
            .await
            .unwrap()
            .unwrap()
            .valid_until,
        c.valid_until
    );
    assert!(
        store
            .update_data_connection(424_242, &ConnectionUpdate::default())
            .await
            .unwrap()
            .is_none()
    );

    // Usage adds up batch by batch, the latest use kept; each batch records a usage change
    // naming the connections it touched (a gone one included: nothing reads it).
    use switchboard::domain::usage::Tally;
    let before_usage = store.latest_change().await.unwrap();
    let tally = |queries, response_bytes, last_used_at| Tally {
        queries,
        response_bytes,
        last_used_at,
    };
    store
        .add_data_connection_usage(&[(made.id, tally(3, 100, 5_000)), (424_242, tally(1, 1, 1))])
        .await
        .unwrap();
    store
        .add_data_connection_usage(&[(made.id, tally(2, 50, 4_000))])
        .await
        .unwrap();
    let used = store
        .get_data_connection(made.id)
        .await
        .unwrap()
        .unwrap()
        .usage;
    assert_eq!((used.queries, used.response_bytes), (5, 150));
    assert_eq!(used.last_used_at, Some(Timestamp::from_millis(5_000)));
    assert_eq!(
        store
            .data_connection_usages(&[made.id, 424_242])
            .await
            .unwrap(),
        [(made.id, used)],
        "read by id, a gone one left out"
    );
    let (recorded, _) = store.changes_after(before_usage, 100).await.unwrap();
    let recorded: Vec<(Entity, String)> = recorded.into_iter().map(|c| (c.entity, c.id)).collect();
    assert_eq!(
        recorded,
        [
            (Entity::DataConnectionUsage, format!("{},424242", made.id)),
            (Entity::DataConnectionUsage, made.id.to_string()),
        ]
    );
    // A large batch is named by several changes, each small enough for a notification.
    let before_large = store.latest_change().await.unwrap();
    let many: Vec<(i64, Tally)> = (1_000_000..1_000_450)
        .map(|id| (id, tally(1, 1, 1)))
        .collect();
    store.add_data_connection_usage(&many).await.unwrap();
    let (recorded, _) = store.changes_after(before_large, 100).await.unwrap();
    let named: Vec<i64> = recorded
        .iter()
        .flat_map(|c| c.id.split(',').map(|id| id.parse::<i64>().unwrap()))
        .collect();
    assert_eq!(recorded.len(), 3);
    assert_eq!(named, (1_000_000..1_000_450).collect::<Vec<_>>());
    let ids: Vec<i64> = (1_000_000..1_000_450).chain([made.id]).collect();
    assert_eq!(
        store.data_connection_usages(&ids).await.unwrap(),
        [(made.id, used)],
        "more ids than one statement takes"
    );

    // Rotation: the old hash kept until the overlap's end, or dropped at once.
    let original = store
        .data_connection_credential(made.id)
        .await
        .unwrap()
        .unwrap()
        .1
        .current;
    let until = Timestamp::from_millis(1_900_000_000_123);
    assert!(
        store
            .rotate_data_connection_password(made.id, &hash(77), Some(until))
            .await
            .unwrap()
            .is_some()
    );
    let (_, hashes) = store
        .data_connection_credential(made.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(hashes.current, hash(77));
    assert_eq!(hashes.previous, Some((original, until)));
    store
        .rotate_data_connection_password(made.id, &hash(78), None)
        .await
        .unwrap()
        .unwrap();
    let all = store.data_connection_credentials().await.unwrap();
    let (_, hashes) = all.iter().find(|(c, _)| c.id == made.id).unwrap();
    assert_eq!((hashes.current, hashes.previous), (hash(78), None));
    assert!(
        store
            .rotate_data_connection_password(424_242, &hash(79), None)
            .await
            .unwrap()
            .is_none()
    );
    let recorded = changes(&store).await;
    assert_eq!(
        recorded
            .iter()
            .filter(|(e, id)| *e == Entity::DataConnection && *id == made.id.to_string())
            .count(),
        1 + 3 + 2,
        "the create, three updates and two rotations"
    );
}

pub async fn audit_events(store: Arc<SqlStore>) {
    use switchboard::domain::audit::{Actor, ActorKind, AuditEvent, AuditFilter, Outcome};
    let event =
        |at: i64, kind: ActorKind, id: Option<i64>, action: &str, outcome: Outcome| AuditEvent {
            id: 0,
            at,
            actor: Actor {
                kind,
                id,
                user: id.map(|i| format!("u{i}@example.com")),
            },
            action: action.into(),
            target: Some(format!("t{at}")),
            request_id: Some(format!("r{at}")),
            client_ip: Some("127.0.0.1".into()),
            outcome,
            status: Some(201),
        };
    let events = [
        event(
            1_000,
            ActorKind::ApiToken,
            Some(1),
            "data_connection.create",
            Outcome::Success,
        ),
        event(
            2_000,
            ActorKind::ApiToken,
            Some(2),
            "data_connection.delete",
            Outcome::Success,
        ),
        event(
            3_000,
            ActorKind::Anonymous,
            None,
            "access.refused",
            Outcome::Refused,
        ),
        event(
            4_000,
            ActorKind::Cli,
            None,
            "api_token.create",
            Outcome::Success,
        ),
    ];
    store.insert_audit_events(&events[..3]).await.unwrap();
    store.insert_audit_events(&events[3..]).await.unwrap();
    let (all, total) = store
        .list_audit_events(&AuditFilter::default(), 0, 50)
        .await
        .unwrap();
    assert_eq!(total, 4);
    assert_eq!(
        all.iter().map(|e| e.at).collect::<Vec<_>>(),
        vec![4_000, 3_000, 2_000, 1_000],
        "newest first"
    );
    let stored = all.last().unwrap();
    assert!(stored.id > 0);
    assert_eq!(
        AuditEvent {
            id: 0,
            ..stored.clone()
        },
        events[0],
        "read back as written"
    );

    let count = |filter: AuditFilter| {
        let store = store.clone();
        async move { store.list_audit_events(&filter, 0, 50).await.unwrap().1 }
    };
    let mut by_actor = AuditFilter::default();
    by_actor.set_actor("api_token:2").unwrap();
    assert_eq!(count(by_actor).await, 1);
    let mut by_kind = AuditFilter::default();
    by_kind.set_actor("api_token").unwrap();
    assert_eq!(count(by_kind).await, 2);
    let mut by_user = AuditFilter::default();
    by_user.set_actor("u1@example.com").unwrap();
    assert_eq!(count(by_user).await, 1);
    for (filter, n) in [
        (
            AuditFilter {
                action: Some("access.refused".into()),
                ..AuditFilter::default()
            },
            1,
        ),
        (
            AuditFilter {
                target: Some("t2000".into()),
                ..AuditFilter::default()
            },
            1,
        ),
        (
            AuditFilter {
                outcome: Some(Outcome::Success),
                ..AuditFilter::default()
            },
            3,
        ),
        (
            AuditFilter {
                since: Some(2_000),
                until: Some(4_000),
                ..AuditFilter::default()
            },
            2,
        ),
    ] {
        assert_eq!(count(filter.clone()).await, n, "{filter:?}");
    }
    let (page, total) = store
        .list_audit_events(&AuditFilter::default(), 1, 2)
        .await
        .unwrap();
    assert_eq!(total, 4);
    assert_eq!(
        page.iter().map(|e| e.at).collect::<Vec<_>>(),
        vec![3_000, 2_000]
    );

    assert_eq!(store.prune_audit_events(2_500).await.unwrap(), 2);
    assert_eq!(count(AuditFilter::default()).await, 2);
}

/// The webhook outbox: a change's event becomes a delivery for each endpoint that takes
/// its type; a lease keeps it to one claimant; attempts move it along; expiries are
/// announced once per lead; done events are pruned.
async fn webhook_outbox(store: Arc<SqlStore>) {
    use switchboard::domain::webhook::{
        AfterAttempt, Attempt, DeliveryFilter, DeliveryState, Endpoint, EndpointSource, EventFilter,
    };
    let endpoint = |id: &str, events: &[&str]| Endpoint {
        id: id.into(),
        source: EndpointSource::Api,
        url: url::Url::parse(&format!("https://{id}.example/hook")).unwrap(),
        events: EventFilter::parse(&events.iter().map(|e| e.to_string()).collect::<Vec<_>>())
            .unwrap(),
        created_at: Timestamp::from_millis(1),
        sealed_secret: Some(vec![1, 2, 3]),
    };
    store
        .insert_webhook_endpoint(&endpoint("all", &[]))
        .await
        .unwrap();
    store
        .insert_webhook_endpoint(&endpoint("deletes", &["data_connection.deleted"]))
        .await
        .unwrap();
    // Configured endpoints are synced: added, then dropped when gone from the config.
    let configured = Endpoint {
        source: EndpointSource::Config,
        sealed_secret: None,
        ..endpoint("cfg", &["integration.*"])
    };
    store
        .sync_configured_webhook_endpoints(std::slice::from_ref(&configured))
        .await
        .unwrap();
    assert_eq!(store.webhook_endpoints().await.unwrap().len(), 3);
    store.sync_configured_webhook_endpoints(&[]).await.unwrap();
    let endpoints = store.webhook_endpoints().await.unwrap();
    assert_eq!(
        endpoints.iter().map(|e| e.id.as_str()).collect::<Vec<_>>(),
        ["all", "deletes"]
    );
    assert_eq!(
        endpoints[0].sealed_secret.as_deref(),
        Some(&[1u8, 2, 3][..])
    );

    let (connection, _) = store
        .insert_data_connection(new_connection("hooked", TeamScope::All))
        .await
        .unwrap();
    store
        .delete_data_connection(connection.id)
        .await
        .unwrap()
        .unwrap();
    let (all, total) = store
        .list_webhook_deliveries(&DeliveryFilter::default(), 0, 50)
        .await
        .unwrap();
    assert_eq!(total, 3, "created to one endpoint, deleted to both");
    assert!(
        all.iter()
            .all(|d| d.state == DeliveryState::Pending && d.attempts == 0)
    );

    // One claimant at a time.
    let now = Timestamp::now().as_millis();
    assert!(store.webhook_deliveries_due(now).await.unwrap());
    let claimed = store
        .claim_webhook_deliveries("a:1", now, now + 60_000, 2)
        .await
        .unwrap();
    assert_eq!(claimed.len(), 2);
    let rest = store
        .claim_webhook_deliveries("b:1", now, now + 60_000, 10)
        .await
        .unwrap();
    assert_eq!(rest.len(), 1);
    assert!(
        store
            .claim_webhook_deliveries("c:1", now, now + 60_000, 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        !store.webhook_deliveries_due(now).await.unwrap(),
        "all leased"
    );
    let first = &claimed[0];
    assert!(first.body.contains(&format!("\"id\":{}", connection.id)));
    assert!(first.event_id.starts_with("msg_"));

    // A failure schedules a retry; a success delivers; giving up fails.
    let attempt = |status| Attempt {
        at: Timestamp::from_millis(now),
        status,
        latency_ms: 7,
        error: Some("the endpoint answered 503".into()),
    };
    store
        .record_webhook_attempt(
            first.id,
            1,
            &attempt(Some(503)),
            AfterAttempt::RetryAt(Timestamp::from_millis(now + 1_000)),
        )
        .await
        .unwrap();
    assert!(
        store
            .claim_webhook_deliveries("c:2", now + 999, now + 60_000, 10)
            .await
            .unwrap()
            .is_empty(),
        "not before its time"
    );
    let again = store
        .claim_webhook_deliveries("c:3", now + 1_000, now + 60_000, 10)
        .await
        .unwrap();
    assert_eq!((again.len(), again[0].attempts), (1, 1));
    store
        .record_webhook_attempt(
            first.id,
            2,
            &Attempt {
                error: None,
                ..attempt(Some(200))
            },
            AfterAttempt::Delivered,
        )
        .await
        .unwrap();
    store
        .record_webhook_attempt(claimed[1].id, 1, &attempt(None), AfterAttempt::GiveUp)
        .await
        .unwrap();
    // A lease given back untried is claimable at once.
    store
        .release_webhook_delivery(rest[0].id, "b:1")
        .await
        .unwrap();
    assert_eq!(store.count_pending_webhook_deliveries().await.unwrap(), 1);
    let (delivery, attempts) = store.webhook_delivery(first.id).await.unwrap().unwrap();
    assert_eq!(delivery.state, DeliveryState::Delivered);
    assert_eq!(delivery.last_status, Some(200));
    assert_eq!(
        attempts.iter().map(|a| a.status).collect::<Vec<_>>(),
        [Some(503), Some(200)]
    );
    let failed = DeliveryFilter {
        state: Some(DeliveryState::Failed),
        ..DeliveryFilter::default()
    };
    assert_eq!(
        store
            .list_webhook_deliveries(&failed, 0, 50)
            .await
            .unwrap()
            .1,
        1
    );

    // Expiries: once per connection and lead, the nearest lead when several apply.
    let day = 86_400_000;
    let soon = NewDataConnection {
        valid_until: Some(Timestamp::from_millis(now + day / 2)),
        ..new_connection("soon", TeamScope::All)
    };
    store.insert_data_connection(soon).await.unwrap();
    let leads = [7 * day, day];
    assert_eq!(store.announce_expiries(now, &leads, day).await.unwrap(), 1);
    assert_eq!(store.announce_expiries(now, &leads, day).await.unwrap(), 0);
    assert_eq!(
        store
            .announce_expiries(now + day, &leads, day)
            .await
            .unwrap(),
        1,
        "then expired"
    );
    let expiring = DeliveryFilter {
        event_type: Some(switchboard::domain::webhook::EventType::DataConnectionExpiring),
        ..DeliveryFilter::default()
    };
    assert_eq!(
        store
            .list_webhook_deliveries(&expiring, 0, 50)
            .await
            .unwrap()
            .1,
        1
    );

    // Done events older than the cut are forgotten; pending ones stay.
    store.prune_webhook_events(now + 2 * day).await.unwrap();
    let (left, _) = store
        .list_webhook_deliveries(&DeliveryFilter::default(), 0, 50)
        .await
        .unwrap();
    assert!(
        left.iter().all(|d| d.state == DeliveryState::Pending),
        "{left:?}"
    );
    assert_eq!(
        left.len(),
        4,
        "the released one, soon's created, expiring and expired"
    );

    // Removing the endpoints removes what they still wait for.
    assert!(store.delete_webhook_endpoint("all").await.unwrap());
    assert!(!store.delete_webhook_endpoint("all").await.unwrap());
    assert!(store.delete_webhook_endpoint("deletes").await.unwrap());
    assert_eq!(store.count_pending_webhook_deliveries().await.unwrap(), 0);
}

macro_rules! contract {
    ($backend:ident, $open:path, $pushes:expr) => {
        mod $backend {
            use super::*;

            #[tokio::test]
            async fn meta() {
                super::meta($open().await.store).await
            }

            #[tokio::test]
            async fn tokens() {
                super::tokens($open().await.store).await
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn first_token_under_concurrency() {
                super::first_token_under_concurrency($open().await.store).await
            }

            #[tokio::test]
            async fn data_connections() {
                super::data_connections($open().await.store).await
            }

            #[tokio::test]
            async fn vault_secrets() {
                super::vault_secrets($open().await.store).await
            }

            #[tokio::test]
            async fn integrations() {
                super::integrations($open().await.store).await
            }

            #[tokio::test]
            async fn refresh_leases() {
                super::refresh_leases($open().await.store).await
            }

            #[tokio::test]
            async fn connect_sessions() {
                super::connect_sessions($open().await.store).await
            }

            #[tokio::test]
            async fn data_connection_changes() {
                super::data_connection_changes($open().await.store).await
            }

            #[tokio::test]
            async fn audit_events() {
                super::audit_events($open().await.store).await
            }

            #[tokio::test]
            async fn token_revocation() {
                super::token_revocation($open().await.store).await
            }

            #[tokio::test]
            async fn console_sessions() {
                super::console_sessions($open().await.store).await
            }

            #[tokio::test]
            async fn team_data_connections() {
                super::team_data_connections($open().await.store).await
            }

            #[tokio::test]
            async fn webhook_outbox() {
                super::webhook_outbox($open().await.store).await
            }

            #[tokio::test]
            async fn change_log() {
                super::change_log($open().await.store).await
            }

            #[tokio::test]
            async fn subscription() {
                super::subscription($open().await.store, $pushes).await
            }
        }
    };
}

contract!(on_sqlite, sqlite_store, false);
contract!(on_postgres, postgres_store, true);

#[tokio::test]
async fn an_export_moves_between_backends_both_ways() {
    let (a, b) = (sqlite_store().await, postgres_store().await);
    export_import(a.store.clone(), b.store.clone()).await;
    let (c, d) = (postgres_store().await, sqlite_store().await);
    export_import(c.store.clone(), d.store.clone()).await;
}
