//! The passthrough's in-memory view of the vault: which secret opens which environment,
//! and each connection by its key with its sealed credential. An immutable snapshot swapped
//! atomically, so a call never waits on the database; the change feed keeps it
//! ([`VaultFollower`]).

use std::sync::Arc;

use async_trait::async_trait;
use imbl::HashMap;

use crate::crypto::CredentialHash;
use crate::domain::integration::{ConnectionState, Environment};
use crate::domain::ports::{
    Change, Entity, IntegrationStore, SealedIntegration, StoreError, VaultSecret, VaultSecretStore,
};
use crate::feed::{Follower, SnapshotCell};

#[derive(Default, Clone)]
struct Snapshot {
    environments: HashMap<CredentialHash, Environment>,
    secret_hashes: HashMap<i64, CredentialHash>,
    by_key: HashMap<String, Arc<SealedIntegration>>,
    key_by_id: HashMap<String, String>,
}

impl Snapshot {
    fn insert_secret(&mut self, secret: VaultSecret) {
        if let Some(old) = self.secret_hashes.insert(secret.id, secret.hash) {
            self.environments.remove(&old);
        }
        self.environments.insert(secret.hash, secret.environment);
    }

    fn remove_secret(&mut self, id: i64) {
        if let Some(hash) = self.secret_hashes.remove(&id) {
            self.environments.remove(&hash);
        }
    }

    fn insert_connection(&mut self, sealed: SealedIntegration) {
        let (id, key) = (sealed.connection.id.clone(), sealed.connection.key.clone());
        if let Some(old) = self.key_by_id.insert(id, key.clone())
            && old != key
        {
            self.by_key.remove(&old);
        }
        self.by_key.insert(key, Arc::new(sealed));
    }

    fn remove_connection(&mut self, id: &str) {
        if let Some(key) = self.key_by_id.remove(id) {
            self.by_key.remove(&key);
        }
    }
}

#[derive(Default)]
pub struct VaultDirectory {
    current: SnapshotCell<Snapshot>,
}

impl VaultDirectory {
    /// The environment a vault secret (by its keyed hash) opens.
    pub fn environment_of(&self, secret: &CredentialHash) -> Option<Environment> {
        self.current.load().environments.get(secret).copied()
    }

    /// The connection `key` names in `environment`.
    pub fn connection(
        &self,
        environment: Environment,
        key: &str,
    ) -> Option<Arc<SealedIntegration>> {
        self.current
            .load()
            .by_key
            .get(key)
            .filter(|c| c.connection.environment == environment)
            .cloned()
    }

    pub fn len(&self) -> usize {
        self.current.load().by_key.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// What a call observed (the platform accepted or refused the credential), seen by the
    /// next call at once; the store is written behind it and the feed confirms it.
    pub fn observe_state(&self, id: &str, state: ConnectionState) {
        self.current.update(|s| {
            let Some(entry) = s.key_by_id.get(id).and_then(|key| s.by_key.get(key)) else {
                return;
            };
            let mut observed = SealedIntegration::clone(entry);
            observed.connection.state = state;
            s.insert_connection(observed);
        });
    }

    fn replace_all(&self, secrets: Vec<VaultSecret>, connections: Vec<SealedIntegration>) {
        let mut snapshot = Snapshot::default();
        for secret in secrets {
            snapshot.insert_secret(secret);
        }
        for connection in connections {
            snapshot.insert_connection(connection);
        }
        self.current.replace(snapshot);
    }
}

/// Keeps a [`VaultDirectory`] as the store has it.
pub struct VaultFollower {
    pub secrets: Arc<dyn VaultSecretStore>,
    pub connections: Arc<dyn IntegrationStore>,
    pub directory: Arc<VaultDirectory>,
}

#[async_trait]
impl Follower for VaultFollower {
    async fn apply(&self, change: &Change) -> Result<(), StoreError> {
        match change.entity {
            Entity::VaultSecret => {
                let Ok(id) = change.id.parse::<i64>() else {
                    return Ok(());
                };
                match self.secrets.vault_secret(id).await? {
                    Some(secret) => self.directory.current.update(|s| s.insert_secret(secret)),
                    None => self.directory.current.update(|s| s.remove_secret(id)),
                }
            }
            Entity::Integration => match self.connections.sealed_integration(&change.id).await? {
                Some(sealed) => self
                    .directory
                    .current
                    .update(|s| s.insert_connection(sealed)),
                None => self
                    .directory
                    .current
                    .update(|s| s.remove_connection(&change.id)),
            },
            Entity::DataConnection | Entity::DataConnectionUsage | Entity::ApiToken => {}
        }
        Ok(())
    }

    async fn reload(&self) -> Result<(), StoreError> {
        let secrets = self.secrets.vault_secrets().await?;
        let connections = self.connections.sealed_integrations().await?;
        self.directory.replace_all(secrets, connections);
        tracing::debug!(
            connections = self.directory.len(),
            "vault snapshot reloaded"
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::integration::{Health, IdentityType, IntegrationConnection};

    fn sealed(id: &str, environment: Environment) -> SealedIntegration {
        SealedIntegration {
            connection: IntegrationConnection {
                id: id.into(),
                environment,
                platform: "resend".into(),
                platform_version: "1.0.0".into(),
                name: None,
                key: format!("key-{id}"),
                identity: "i".into(),
                identity_type: IdentityType::User,
                tags: vec![],
                version: "1.0.0".into(),
                active: true,
                state: ConnectionState::Unknown,
                created_at: 1,
                credential_generation: 1,
                health: Health::default(),
            },
            sealed: vec![1, 2, 3],
        }
    }

    #[test]
    fn connections_are_found_by_key_within_their_environment_only() {
        let dir = VaultDirectory::default();
        dir.replace_all(
            vec![VaultSecret {
                id: 1,
                environment: Environment::Live,
                hash: [7; 32],
                created_at: crate::domain::time::Timestamp::from_millis(0),
            }],
            vec![
                sealed("a", Environment::Test),
                sealed("b", Environment::Live),
            ],
        );
        assert_eq!(dir.environment_of(&[7; 32]), Some(Environment::Live));
        assert_eq!(dir.environment_of(&[8; 32]), None);
        assert!(dir.connection(Environment::Test, "key-a").is_some());
        assert!(dir.connection(Environment::Live, "key-a").is_none());
        dir.observe_state("a", ConnectionState::Failed);
        assert_eq!(
            dir.connection(Environment::Test, "key-a")
                .unwrap()
                .connection
                .state,
            ConnectionState::Failed
        );
        dir.current.update(|s| s.remove_connection("a"));
        assert!(dir.connection(Environment::Test, "key-a").is_none());
        dir.current.update(|s| s.remove_secret(1));
        assert_eq!(dir.environment_of(&[7; 32]), None);
    }
}
