//! The gateway's in-memory view of issued credentials: an immutable snapshot swapped
//! atomically, so the per-request lookup never waits on the database or on a lock. The
//! change feed keeps it ([`DirectoryFollower`]).

use std::sync::Arc;

use async_trait::async_trait;
use imbl::{HashMap, Vector};

use crate::domain::data_connection::IssuedCredential;
use crate::domain::ports::{Change, DataConnectionStore, Entity, IdRanks, StoreError};
use crate::feed::{Follower, SnapshotCell};

/// Persistent maps: a change copies a path of the tree, not every entry, so issuing a
/// credential costs the same with ten or a million of them.
#[derive(Default, Clone)]
struct Snapshot {
    by_username: HashMap<String, Arc<IssuedCredential>>,
    username_by_id: HashMap<i64, String>,
    /// Every id, ascending: the control plane's page boundaries ([`IdRanks`]).
    ids: Vector<i64>,
}

impl Snapshot {
    fn insert(&mut self, credential: IssuedCredential) {
        let id = credential.connection_id;
        match self.username_by_id.insert(id, credential.username.clone()) {
            // A connection's username never changes, but a stale entry must not linger.
            Some(old) if old != credential.username => {
                self.by_username.remove(&old);
            }
            Some(_) => {}
            None => self.ids.insert_ord(id),
        }
        self.by_username
            .insert(credential.username.clone(), Arc::new(credential));
    }

    fn remove(&mut self, connection_id: i64) {
        if let Some(username) = self.username_by_id.remove(&connection_id) {
            self.by_username.remove(&username);
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

    pub fn upsert(&self, credential: IssuedCredential) {
        self.current.update(|s| s.insert(credential));
    }

    pub fn remove(&self, connection_id: i64) {
        self.current.update(|s| s.remove(connection_id));
    }

    pub fn replace_all(&self, credentials: Vec<IssuedCredential>) {
        let mut ids: Vec<i64> = credentials.iter().map(|c| c.connection_id).collect();
        ids.sort_unstable();
        ids.dedup();
        let mut snapshot = Snapshot {
            ids: ids.into_iter().collect(),
            ..Snapshot::default()
        };
        for c in credentials {
            // The ids are in already: only the maps are filled.
            snapshot
                .username_by_id
                .insert(c.connection_id, c.username.clone());
            snapshot.by_username.insert(c.username.clone(), Arc::new(c));
        }
        self.current.replace(snapshot);
    }
}

impl IdRanks for CredentialDirectory {
    fn id_at(&self, offset: u64) -> Option<i64> {
        let at = usize::try_from(offset).ok()?;
        self.current.load().ids.get(at).copied()
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
        if change.entity != Entity::DataConnection {
            return Ok(());
        }
        let Ok(id) = change.id.parse::<i64>() else {
            return Ok(());
        };
        match self.store.data_connection_credential(id).await? {
            Some((connection, hash)) => self
                .directory
                .upsert(IssuedCredential::of(&connection, hash)),
            None => self.directory.remove(id),
        }
        Ok(())
    }

    async fn reload(&self) -> Result<(), StoreError> {
        let credentials = self
            .store
            .data_connection_credentials()
            .await?
            .into_iter()
            .map(|(connection, hash)| IssuedCredential::of(&connection, hash))
            .collect();
        self.directory.replace_all(credentials);
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
    use crate::domain::data_connection::TeamScope;

    fn credential(id: i64) -> IssuedCredential {
        IssuedCredential {
            connection_id: id,
            username: format!("u{id}"),
            password_hash: [0; 32],
            previous_password: None,
            valid_until: None,
            ip_allowlist: IpAllowlist::default(),
            teams: TeamScope::All,
            region_id: "r".into(),
        }
    }

    proptest::proptest! {
        /// Whatever the order of upserts and removals, the ranks are the ids in order.
        #[test]
        fn ranks_follow_every_change(
            ops in proptest::collection::vec((proptest::bool::ANY, 0i64..64), 0..200),
            preload in proptest::collection::vec(0i64..64, 0..20),
        ) {
            let dir = CredentialDirectory::default();
            dir.replace_all(preload.iter().map(|&id| credential(id)).collect());
            let mut model: std::collections::BTreeSet<i64> = preload.into_iter().collect();
            for (upsert, id) in ops {
                if upsert {
                    dir.upsert(credential(id));
                    model.insert(id);
                } else {
                    dir.remove(id);
                    model.remove(&id);
                }
            }
            let ranked: Vec<i64> = (0..).map_while(|k| dir.id_at(k)).collect();
            proptest::prop_assert_eq!(ranked, model.iter().copied().collect::<Vec<_>>());
            proptest::prop_assert_eq!(dir.len(), model.len());
        }
    }

    #[test]
    fn upserts_removals_and_reloads() {
        let dir = CredentialDirectory::default();
        dir.replace_all(vec![credential(1), credential(2)]);
        assert!(dir.lookup("u1").is_some());
        dir.remove(1);
        assert!(dir.lookup("u1").is_none());
        assert!(dir.lookup("u2").is_some());
        dir.upsert(credential(3));
        dir.upsert(credential(3));
        assert_eq!(dir.len(), 2);
        dir.remove(42);
        assert_eq!(dir.len(), 2);
    }
}
