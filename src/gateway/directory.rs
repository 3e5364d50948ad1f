//! The gateway's in-memory view of issued credentials: an immutable snapshot swapped
//! atomically, so the per-request lookup never waits on the database or on a lock.

use std::sync::Arc;
use std::sync::Mutex;

use arc_swap::ArcSwap;
use imbl::HashMap;

use crate::domain::data_connection::{CredentialChange, CredentialListener, IssuedCredential};

/// Persistent maps: a change copies a path of the tree, not every entry, so issuing a
/// credential costs the same with ten or a million of them.
#[derive(Default, Clone)]
struct Snapshot {
    by_username: HashMap<String, Arc<IssuedCredential>>,
    username_by_id: HashMap<i64, String>,
}

impl Snapshot {
    fn insert(&mut self, credential: IssuedCredential) {
        self.username_by_id
            .insert(credential.connection_id, credential.username.clone());
        self.by_username
            .insert(credential.username.clone(), Arc::new(credential));
    }
}

#[derive(Default)]
pub struct CredentialDirectory {
    current: ArcSwap<Snapshot>,
    /// Serialises writers (changes and full refreshes); readers never take it. Holds the
    /// number of changes applied, so a refresh can tell it raced with one.
    writers: Mutex<u64>,
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

    /// The number of changes applied so far; pass it to [`Self::replace_all`].
    pub fn generation(&self) -> u64 {
        *self.writers.lock().expect("not poisoned")
    }

    /// Installs a full listing read from the store, unless a change was applied since
    /// `generation` was taken: the listing could then predate a revocation and bring a
    /// deleted credential back. Returns whether it was installed.
    pub fn replace_all(&self, credentials: Vec<IssuedCredential>, generation: u64) -> bool {
        let guard = self.writers.lock().expect("not poisoned");
        if *guard != generation {
            return false;
        }
        let mut snapshot = Snapshot::default();
        for c in credentials {
            snapshot.insert(c);
        }
        self.current.store(Arc::new(snapshot));
        true
    }
}

impl CredentialListener for CredentialDirectory {
    fn apply(&self, change: CredentialChange) {
        let mut guard = self.writers.lock().expect("not poisoned");
        let mut next = Snapshot::clone(&self.current.load());
        match change {
            CredentialChange::Issued(credential) => next.insert(credential),
            CredentialChange::Revoked { connection_id } => {
                if let Some(username) = next.username_by_id.remove(&connection_id) {
                    next.by_username.remove(&username);
                }
            }
        }
        self.current.store(Arc::new(next));
        *guard += 1;
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
    fn changes_apply_and_a_stale_refresh_cannot_resurrect_a_revoked_credential() {
        let dir = CredentialDirectory::default();
        assert!(dir.replace_all(vec![credential(1), credential(2)], dir.generation()));
        assert!(dir.lookup("u1").is_some());

        // A refresh reads the store while connection 1 still exists...
        let generation = dir.generation();
        let stale = vec![credential(1), credential(2)];
        // ...then connection 1 is deleted before the refresh installs its listing.
        dir.apply(CredentialChange::Revoked { connection_id: 1 });
        assert!(
            !dir.replace_all(stale, generation),
            "the stale listing is dropped"
        );
        assert!(dir.lookup("u1").is_none());
        assert!(dir.lookup("u2").is_some());

        dir.apply(CredentialChange::Issued(credential(3)));
        assert_eq!(dir.len(), 2);
    }
}
