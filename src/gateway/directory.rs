//! The gateway's in-memory view of issued credentials: an immutable snapshot swapped
//! atomically, so the per-request lookup never waits on the database or on a lock. The
//! change feed keeps it ([`DirectoryFollower`]).

use std::sync::Arc;

use async_trait::async_trait;
use imbl::HashMap;

use crate::domain::data_connection::IssuedCredential;
use crate::domain::ports::{Change, DataConnectionStore, Entity, StoreError};
use crate::feed::{Follower, SnapshotCell};

/// Persistent maps: a change copies a path of the tree, not every entry, so issuing a
/// credential costs the same with ten or a million of them.
#[derive(Default, Clone)]
struct Snapshot {
    by_username: HashMap<String, Arc<IssuedCredential>>,
    username_by_id: HashMap<i64, String>,
}

impl Snapshot {
    fn insert(&mut self, credential: IssuedCredential) {
        // A connection's username never changes, but a stale entry must not linger.
        if let Some(old) = self
            .username_by_id
            .insert(credential.connection_id, credential.username.clone())
            && old != credential.username
        {
            self.by_username.remove(&old);
        }
        self.by_username
            .insert(credential.username.clone(), Arc::new(credential));
    }

    fn remove(&mut self, connection_id: i64) {
        if let Some(username) = self.username_by_id.remove(&connection_id) {
            self.by_username.remove(&username);
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
        let mut snapshot = Snapshot::default();
        for c in credentials {
            snapshot.insert(c);
        }
        self.current.replace(snapshot);
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
            valid_until: None,
            ip_allowlist: IpAllowlist::default(),
            teams: TeamScope::All,
            region_id: "r".into(),
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
