//! The gateway's in-memory view of issued credentials: an immutable snapshot swapped
//! atomically, so the per-request lookup never waits on the database or on a lock. The
//! change feed keeps it ([`DirectoryFollower`]). The control plane lists data connections
//! from the same snapshot ([`ConnectionPages`]).

use std::sync::Arc;

use async_trait::async_trait;
use imbl::{HashMap, Vector};

use crate::domain::data_connection::{DataConnection, IssuedCredential, PasswordHashes};
use crate::domain::ports::{Change, ConnectionPages, DataConnectionStore, Entity, StoreError};
use crate::domain::usage::Usage;
use crate::feed::{Follower, SnapshotCell};

/// Usernames hashed with foldhash, not SipHash (two thirds of a lookup's time with a
/// thousand connections): the keys in the map are ones the API issued at random, so a
/// client choosing what it presents cannot make them collide.
type ByUsername = imbl::GenericHashMap<
    String,
    Arc<IssuedCredential>,
    foldhash::fast::RandomState,
    imbl::shared_ptr::DefaultSharedPtr,
>;

/// Persistent maps: a change copies a path of the tree, not every entry, so issuing a
/// credential costs the same with ten or a million of them.
#[derive(Default, Clone)]
struct Snapshot {
    by_username: ByUsername,
    /// Each connection as the control plane lists it.
    by_id: HashMap<i64, Arc<DataConnection>>,
    /// Every id, ascending: the list's order.
    ids: Vector<i64>,
}

impl Snapshot {
    fn insert(&mut self, connection: DataConnection, passwords: PasswordHashes) {
        let (id, connection) = (connection.id, Arc::new(connection));
        let username = connection.username.clone();
        match self.by_id.insert(id, connection.clone()) {
            // A connection's username never changes, but a stale entry must not linger.
            Some(old) if old.username != username => {
                self.by_username.remove(&old.username);
            }
            Some(_) => {}
            None => self.ids.insert_ord(id),
        }
        self.by_username.insert(
            username,
            Arc::new(IssuedCredential::of(connection, passwords)),
        );
    }

    fn remove(&mut self, connection_id: i64) {
        if let Some(old) = self.by_id.remove(&connection_id) {
            self.by_username.remove(&old.username);
            if let Ok(at) = self.ids.binary_search(&connection_id) {
                self.ids.remove(at);
            }
        }
    }
}

#[derive(Default)]
pub struct CredentialDirectory {
    current: SnapshotCell<Snapshot>,
}

impl CredentialDirectory {
    pub fn lookup(&self, username: &str) -> Option<Arc<IssuedCredential>> {
        self.current.load().by_username.get(username).cloned()
    }

    pub fn len(&self) -> usize {
        self.current.load().by_username.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn upsert(&self, connection: DataConnection, passwords: PasswordHashes) {
        self.current.update(|s| s.insert(connection, passwords));
    }

    pub fn remove(&self, connection_id: i64) {
        self.current.update(|s| s.remove(connection_id));
    }

    /// Usage as the store now has it (the credentials do not depend on it).
    pub fn set_usage(&self, usages: &[(i64, Usage)]) {
        self.current.update(|s| {
            for (id, usage) in usages {
                let Some(connection) = s.by_id.get_mut(id) else {
                    continue;
                };
                Arc::make_mut(connection).usage = *usage;
                // The credential shares the listed connection: it takes the changed copy
                // too, rather than keeping the old one alive beside it.
                let connection = connection.clone();
                if let Some(credential) = s.by_username.get_mut(&connection.username) {
                    Arc::make_mut(credential).connection = connection;
                }
            }
        });
    }

    pub fn replace_all(&self, connections: Vec<(DataConnection, PasswordHashes)>) {
        let mut ids: Vec<i64> = connections.iter().map(|(c, _)| c.id).collect();
        ids.sort_unstable();
        ids.dedup();
        let mut snapshot = Snapshot {
            ids: ids.into_iter().collect(),
            ..Snapshot::default()
        };
        for (connection, passwords) in connections {
            // The ids are in already: only the maps are filled.
            let connection = Arc::new(connection);
            snapshot.by_username.insert(
                connection.username.clone(),
                Arc::new(IssuedCredential::of(connection.clone(), passwords)),
            );
            snapshot.by_id.insert(connection.id, connection);
        }
        self.current.replace(snapshot);
    }
}

impl ConnectionPages for CredentialDirectory {
    fn page(&self, offset: u64, limit: usize) -> (Vec<Arc<DataConnection>>, u64) {
        let snapshot = self.current.load();
        let total = snapshot.ids.len();
        let start = usize::try_from(offset).unwrap_or(usize::MAX).min(total);
        let end = start.saturating_add(limit).min(total);
        let mut ids = snapshot.ids.focus();
        let page = (start..end)
            .filter_map(|at| ids.get(at).copied())
            .filter_map(|id| snapshot.by_id.get(&id).cloned())
            .collect();
        (page, total as u64)
    }
}

/// Keeps a [`CredentialDirectory`] as the store has it.
pub struct DirectoryFollower {
    pub store: Arc<dyn DataConnectionStore>,
    pub directory: Arc<CredentialDirectory>,
}

#[async_trait]
impl Follower for DirectoryFollower {
    async fn apply(&self, change: &Change) -> Result<(), StoreError> {
        match change.entity {
            Entity::DataConnection => {
                let Ok(id) = change.id.parse::<i64>() else {
                    return Ok(());
                };
                match self.store.data_connection_credential(id).await? {
                    Some((connection, passwords)) => self.directory.upsert(connection, passwords),
                    None => self.directory.remove(id),
                }
            }
            Entity::DataConnectionUsage => {
                let ids: Vec<i64> = change
                    .id
                    .split(',')
                    .filter_map(|id| id.parse().ok())
                    .collect();
                let usages = self.store.data_connection_usages(&ids).await?;
                self.directory.set_usage(&usages);
            }
            Entity::Integration | Entity::VaultSecret | Entity::ApiToken => {}
        }
        Ok(())
    }

    async fn reload(&self) -> Result<(), StoreError> {
        let connections = self.store.data_connection_credentials().await?;
        self.directory.replace_all(connections);
        tracing::debug!(
            credentials = self.directory.len(),
            "credential snapshot reloaded"
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::allowlist::IpAllowlist;
    use crate::domain::data_connection::{ClientType, TeamScope};
    use crate::domain::time::Timestamp;

    fn connection(id: i64) -> (DataConnection, PasswordHashes) {
        let connection = DataConnection {
            id,
            client_type: ClientType::ClickHouse,
            note: None,
            created_at: Timestamp::from_millis(0),
            valid_until: None,
            region_id: "r".into(),
            host: "h".into(),
            port: 8123,
            username: format!("u{id}"),
            ip_allowlist: IpAllowlist::default(),
            teams: TeamScope::All,
            created_by: None,
            usage: Usage::default(),
        };
        let passwords = PasswordHashes {
            current: [0; 32],
            previous: None,
        };
        (connection, passwords)
    }

    fn ids(page: &[Arc<DataConnection>]) -> Vec<i64> {
        page.iter().map(|c| c.id).collect()
    }

    proptest::proptest! {
        /// Whatever the order of upserts and removals, every page is that window of the
        /// ids in order, and the total is how many there are.
        #[test]
        fn pages_follow_every_change(
            ops in proptest::collection::vec((proptest::bool::ANY, 0i64..64), 0..200),
            preload in proptest::collection::vec(0i64..64, 0..20),
            offset in 0u64..80,
            limit in 0usize..30,
        ) {
            let dir = CredentialDirectory::default();
            dir.replace_all(preload.iter().map(|&id| connection(id)).collect());
            let mut model: std::collections::BTreeSet<i64> = preload.into_iter().collect();
            for (upsert, id) in ops {
                if upsert {
                    let (c, p) = connection(id);
                    dir.upsert(c, p);
                    model.insert(id);
                } else {
                    dir.remove(id);
                    model.remove(&id);
                }
            }
            let all: Vec<i64> = model.iter().copied().collect();
            let (page, total) = dir.page(offset, limit);
            let expected: Vec<i64> = all.iter().copied().skip(offset as usize).take(limit).collect();
            proptest::prop_assert_eq!(ids(&page), expected);
            proptest::prop_assert_eq!(total, all.len() as u64);
            proptest::prop_assert_eq!(dir.len(), model.len());
            let found = all.iter().all(|id| dir.lookup(&format!("u{id}")).is_some());
            proptest::prop_assert!(found);
        }
    }

    #[test]
    fn upserts_removals_and_reloads() {
        let dir = CredentialDirectory::default();
        dir.replace_all(vec![connection(1), connection(2)]);
        assert!(dir.lookup("u1").is_some());
        dir.remove(1);
        assert!(dir.lookup("u1").is_none());
        assert!(dir.lookup("u2").is_some());
        let (c, p) = connection(3);
        dir.upsert(c.clone(), p);
        dir.upsert(c, p);
        assert_eq!(dir.len(), 2);
        dir.remove(42);
        assert_eq!(dir.len(), 2);
        assert_eq!(ids(&dir.page(0, 10).0), [2, 3]);
        let (beyond, total) = dir.page(u64::MAX, 10);
        assert!(beyond.is_empty());
        assert_eq!(total, 2);
    }

    #[test]
    fn usage_changes_the_listed_connection_and_its_credential_alike() {
        let dir = CredentialDirectory::default();
        dir.replace_all(vec![connection(1), connection(2)]);
        let before = dir.lookup("u1").unwrap();
        let used = Usage {
            queries: 3,
            response_bytes: 90,
            last_used_at: Some(Timestamp::from_millis(7)),
        };
        // An id that is gone (deleted since the batch) is passed over.
        dir.set_usage(&[(1, used), (99, used)]);
        let (page, total) = dir.page(0, 10);
        assert_eq!(
            (page[0].usage, page[1].usage, total),
            (used, Usage::default(), 2)
        );
        // One copy still: the credential takes the changed one, its passwords as they were.
        let after = dir.lookup("u1").unwrap();
        assert!(Arc::ptr_eq(&after.connection, &page[0]));
        assert_eq!(after.password_hash, before.password_hash);
        assert_eq!(before.connection.usage, Usage::default());
    }

    #[test]
    fn a_username_change_drops_the_old_name() {
        let dir = CredentialDirectory::default();
        let (mut c, p) = connection(1);
        dir.upsert(c.clone(), p);
        c.username = "renamed".into();
        dir.upsert(c, p);
        assert!(dir.lookup("u1").is_none());
        assert_eq!(dir.lookup("renamed").unwrap().connection.id, 1);
        assert_eq!(dir.page(0, 10).1, 1);
    }

    /// The credential and the listed connection are one copy, however it was put in.
    #[test]
    fn a_credential_shares_its_listed_connection() {
        let directory = CredentialDirectory::default();
        directory.replace_all(vec![connection(1), connection(2)]);
        let (listed, _) = directory.page(0, 10);
        assert!(Arc::ptr_eq(
            &directory.lookup("u1").unwrap().connection,
            &listed[0]
        ));
        let (changed, passwords) = connection(2);
        directory.upsert(changed, passwords);
        let (listed, _) = directory.page(0, 10);
        assert!(Arc::ptr_eq(
            &directory.lookup("u2").unwrap().connection,
            &listed[1]
        ));
    }
}
