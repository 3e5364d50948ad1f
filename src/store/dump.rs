//! Moving an install between stores: every row as stored (hashes stay hashes, sealed values
//! stay sealed, so a dump needs and reveals no key), and loading one into an empty store.

use super::engine::{Bind, Kind, Row, Statement};
use super::sql::{self, Dialect};
use super::{SqlStore, StoreError};

pub const DUMP_FORMAT: &str = "switchboard-dump";
pub const DUMP_VERSION: u32 = 1;

#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct Dump {
    pub format: String,
    pub version: u32,
    pub meta: Vec<MetaRow>,
    pub users: Vec<UserRow>,
    pub api_tokens: Vec<TokenRow>,
    pub data_connections: Vec<ConnectionDumpRow>,
    #[serde(default)]
    pub vault_secrets: Vec<VaultSecretRow>,
    #[serde(default)]
    pub integration_connections: Vec<IntegrationDumpRow>,
    /// Endpoints made through the API (their secrets sealed); configured ones are synced
    /// from the configuration at start.
    #[serde(default)]
    pub webhook_endpoints: Vec<WebhookEndpointRow>,
}

#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct WebhookEndpointRow {
    pub id: String,
    pub source: String,
    pub url: String,
    pub events: String,
    #[serde(with = "base64_opt_bytes", default)]
    pub sealed_secret: Option<Vec<u8>>,
    pub created_at: i64,
}

#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct MetaRow {
    pub key: String,
    #[serde(with = "base64_bytes")]
    pub value: Vec<u8>,
}

#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct UserRow {
    pub id: i64,
    pub email: String,
    pub created_at: i64,
}

#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct TokenRow {
    pub id: i64,
    #[serde(with = "base64_bytes")]
    pub token_hash: Vec<u8>,
    pub team_id: Option<i64>,
    pub user_id: Option<i64>,
    pub created_at: i64,
}

/// A data connection's columns; the JSON columns travel as their JSON text.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct ConnectionDumpRow {
    pub id: i64,
    pub client_type: String,
    pub note: Option<String>,
    pub created_at: i64,
    pub valid_until: Option<i64>,
    pub region_id: String,
    pub host: String,
    pub port: i64,
    pub username: String,
    #[serde(with = "base64_bytes")]
    pub password_hash: Vec<u8>,
    pub ip_allowlist: String,
    pub team_ids: Option<String>,
    pub created_by: Option<i64>,
    /// The password a rotation's overlap still accepts, until `previous_password_until`.
    #[serde(with = "base64_opt_bytes", default)]
    pub previous_password_hash: Option<Vec<u8>>,
    #[serde(default)]
    pub previous_password_until: Option<i64>,
    #[serde(default)]
    pub query_count: i64,
    #[serde(default)]
    pub response_bytes: i64,
    #[serde(default)]
    pub last_used_at: Option<i64>,
}

#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct VaultSecretRow {
    pub id: i64,
    pub environment: String,
    #[serde(with = "base64_bytes")]
    pub secret_hash: Vec<u8>,
    pub created_at: i64,
}

/// An integration connection; its credential stays sealed.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct IntegrationDumpRow {
    pub id: String,
    pub environment: String,
    pub platform: String,
    pub platform_version: String,
    pub name: Option<String>,
    pub connection_key: String,
    pub identity: String,
    pub identity_type: String,
    pub tags: String,
    pub version: String,
    pub active: bool,
    pub state: String,
    pub created_at: i64,
    #[serde(with = "base64_bytes")]
    pub sealed_credentials: Vec<u8>,
    #[serde(default = "first_generation")]
    pub credential_generation: i64,
    #[serde(default)]
    pub expires_at: Option<i64>,
    #[serde(default)]
    pub retry_at: Option<i64>,
    #[serde(default)]
    pub refresh_attempts: i64,
    #[serde(default)]
    pub consecutive_failures: i64,
    #[serde(default)]
    pub last_error: Option<String>,
    #[serde(default)]
    pub last_error_at: Option<i64>,
    #[serde(default)]
    pub last_refresh_at: Option<i64>,
}

fn first_generation() -> i64 {
    1
}

mod base64_opt_bytes {
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &Option<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
        match bytes {
            Some(b) => s.serialize_some(&STANDARD.encode(b)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<u8>>, D::Error> {
        Option::<String>::deserialize(d)?
            .map(|text| STANDARD.decode(text).map_err(serde::de::Error::custom))
            .transpose()
    }
}

mod base64_bytes {
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&STANDARD.encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        STANDARD
            .decode(String::deserialize(d)?)
            .map_err(serde::de::Error::custom)
    }
}

const CONNECTION_COLUMNS: &str = "id, client_type, note, created_at, valid_until, region_id, host, port, \
     username, password_hash, ip_allowlist, team_ids, created_by, previous_password_hash, \
     previous_password_until, query_count, response_bytes, last_used_at";
const WEBHOOK_ENDPOINT_DUMP_COLUMNS: &str = "id, source, url, events, sealed_secret, created_at";
const INTEGRATION_DUMP_COLUMNS: &str = "id, environment, platform, platform_version, name, connection_key, identity, \
     identity_type, tags, version, active, state, created_at, sealed_credentials, credential_generation, \
     expires_at, retry_at, refresh_attempts, consecutive_failures, last_error, last_error_at, last_refresh_at";

/// `$1, $2, ..., $n`
fn placeholders(n: usize) -> String {
    (1..=n)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn rows<T>(rows: Vec<Row>, f: fn(Row) -> Result<T, StoreError>) -> Result<Vec<T>, StoreError> {
    rows.into_iter().map(f).collect()
}

fn json_text(text: Option<&str>, what: &str) -> Result<Bind, StoreError> {
    text.map(serde_json::from_str)
        .transpose()
        .map(Bind::Json)
        .map_err(|_| StoreError::Corrupt(format!("{what} is not JSON")))
}

impl SqlStore {
    /// Every row, for moving to another store.
    pub async fn export(&self) -> Result<Dump, StoreError> {
        let fetch = |sql: String, kinds: &'static [Kind]| {
            let statement = Statement::new(sql).returns(kinds);
            async move { self.writer.fetch(&statement).await }
        };
        use Kind::{Bool, Bytes, Int, Text};
        Ok(Dump {
            format: DUMP_FORMAT.into(),
            version: DUMP_VERSION,
            meta: rows(
                fetch("SELECT key, value FROM meta ORDER BY key".into(), &[Text, Bytes]).await?,
                |mut r| {
                    Ok(MetaRow {
                        key: r.text(0)?,
                        value: r.bytes(1)?,
                    })
                },
            )?,
            users: rows(
                fetch(
                    "SELECT id, email, created_at FROM users ORDER BY id".into(),
                    &[Int, Text, Int],
                )
                .await?,
                |mut r| {
                    Ok(UserRow {
                        id: r.int(0)?,
                        email: r.text(1)?,
                        created_at: r.int(2)?,
                    })
                },
            )?,
            api_tokens: rows(
                fetch(
                    "SELECT id, token_hash, team_id, user_id, created_at FROM api_tokens ORDER BY id"
                        .into(),
                    &[Int, Bytes, Int, Int, Int],
                )
                .await?,
                |mut r| {
                    Ok(TokenRow {
                        id: r.int(0)?,
                        token_hash: r.bytes(1)?,
                        team_id: r.opt_int(2)?,
                        user_id: r.opt_int(3)?,
                        created_at: r.int(4)?,
                    })
                },
            )?,
            data_connections: rows(
                fetch(
                    "SELECT id, client_type, note, created_at, valid_until, region_id, host, \
                     CAST(port AS BIGINT), username, password_hash, CAST(ip_allowlist AS TEXT), \
                     CAST(team_ids AS TEXT), created_by, previous_password_hash, \
                     previous_password_until, query_count, response_bytes, last_used_at \
                     FROM data_connections ORDER BY id"
                        .into(),
                    &[
                        Int, Text, Text, Int, Int, Text, Text, Int, Text, Bytes, Text, Text, Int,
                        Bytes, Int, Int, Int, Int,
                    ],
                )
                .await?,
                |mut r| {
                    Ok(ConnectionDumpRow {
                        id: r.int(0)?,
                        client_type: r.text(1)?,
                        note: r.opt_text(2)?,
                        created_at: r.int(3)?,
                        valid_until: r.opt_int(4)?,
                        region_id: r.text(5)?,
                        host: r.text(6)?,
                        port: r.int(7)?,
                        username: r.text(8)?,
                        password_hash: r.bytes(9)?,
                        ip_allowlist: r.text(10)?,
                        team_ids: r.opt_text(11)?,
                        created_by: r.opt_int(12)?,
                        previous_password_hash: r.opt_bytes(13)?,
                        previous_password_until: r.opt_int(14)?,
                        query_count: r.int(15)?,
                        response_bytes: r.int(16)?,
                        last_used_at: r.opt_int(17)?,
                    })
                },
            )?,
            vault_secrets: rows(
                fetch(
                    "SELECT id, environment, secret_hash, created_at FROM vault_secrets ORDER BY id"
                        .into(),
                    &[Int, Text, Bytes, Int],
                )
                .await?,
                |mut r| {
                    Ok(VaultSecretRow {
                        id: r.int(0)?,
                        environment: r.text(1)?,
                        secret_hash: r.bytes(2)?,
                        created_at: r.int(3)?,
                    })
                },
            )?,
            integration_connections: rows(
                fetch(
                    format!(
                        "SELECT {} FROM integration_connections ORDER BY created_at, id",
                        INTEGRATION_DUMP_COLUMNS.replace("tags,", "CAST(tags AS TEXT),")
                    ),
                    &[
                        Text, Text, Text, Text, Text, Text, Text, Text, Text, Text, Bool, Text,
                        Int, Bytes, Int, Int, Int, Int, Int, Text, Int, Int,
                    ],
                )
                .await?,
                |mut r| {
                    Ok(IntegrationDumpRow {
                        id: r.text(0)?,
                        environment: r.text(1)?,
                        platform: r.text(2)?,
                        platform_version: r.text(3)?,
                        name: r.opt_text(4)?,
                        connection_key: r.text(5)?,
                        identity: r.text(6)?,
                        identity_type: r.text(7)?,
                        tags: r.text(8)?,
                        version: r.text(9)?,
                        active: r.bool(10)?,
                        state: r.text(11)?,
                        created_at: r.int(12)?,
                        sealed_credentials: r.bytes(13)?,
                        credential_generation: r.int(14)?,
                        expires_at: r.opt_int(15)?,
                        retry_at: r.opt_int(16)?,
                        refresh_attempts: r.int(17)?,
                        consecutive_failures: r.int(18)?,
                        last_error: r.opt_text(19)?,
                        last_error_at: r.opt_int(20)?,
                        last_refresh_at: r.opt_int(21)?,
                    })
                },
            )?,
            webhook_endpoints: rows(
                fetch(
                    format!(
                        "SELECT {WEBHOOK_ENDPOINT_DUMP_COLUMNS} FROM webhook_endpoints \
                         WHERE source = 'api' ORDER BY created_at, id"
                    ),
                    &[Text, Text, Text, Text, Bytes, Int],
                )
                .await?,
                |mut r| {
                    Ok(WebhookEndpointRow {
                        id: r.text(0)?,
                        source: r.text(1)?,
                        url: r.text(2)?,
                        events: r.text(3)?,
                        sealed_secret: r.opt_bytes(4)?,
                        created_at: r.int(5)?,
                    })
                },
            )?,
        })
    }

    /// Loads a dump into an empty store, keeping ids; refuses a store that holds data.
    pub async fn import(&self, dump: &Dump) -> Result<(), StoreError> {
        let mut tx = self.writer.begin().await?;
        let occupied = tx
            .fetch_one(
                &Statement::new(
                    "SELECT (SELECT COUNT(*) FROM api_tokens) + (SELECT COUNT(*) FROM data_connections) \
                     + (SELECT COUNT(*) FROM meta) + (SELECT COUNT(*) FROM vault_secrets) \
                     + (SELECT COUNT(*) FROM integration_connections)",
                )
                .returns(&[Kind::Int]),
            )
            .await?
            .int(0)?;
        if occupied > 0 {
            return Err(StoreError::NotEmpty(
                "the target database already holds data; import needs an empty one",
            ));
        }
        for m in &dump.meta {
            tx.execute(&sql::init_meta(&m.key, &m.value)).await?;
        }
        for u in &dump.users {
            tx.execute(
                &Statement::new("INSERT INTO users (id, email, created_at) VALUES ($1, $2, $3)")
                    .bind(u.id)
                    .bind(u.email.as_str())
                    .bind(u.created_at),
            )
            .await?;
        }
        for t in &dump.api_tokens {
            tx.execute(
                &Statement::new(
                    "INSERT INTO api_tokens (id, token_hash, team_id, user_id, created_at) VALUES ($1, $2, $3, $4, $5)",
                )
                .bind(t.id)
                .bind(t.token_hash.as_slice())
                .bind(t.team_id)
                .bind(t.user_id)
                .bind(t.created_at),
            )
            .await?;
        }
        for c in &dump.data_connections {
            tx.execute(
                &Statement::new(format!(
                    "INSERT INTO data_connections ({CONNECTION_COLUMNS}) VALUES ({})",
                    placeholders(18)
                ))
                .bind(c.id)
                .bind(c.client_type.as_str())
                .bind(c.note.as_deref())
                .bind(c.created_at)
                .bind(c.valid_until)
                .bind(c.region_id.as_str())
                .bind(c.host.as_str())
                .bind(c.port)
                .bind(c.username.as_str())
                .bind(c.password_hash.as_slice())
                .bind(json_text(Some(&c.ip_allowlist), "ip_allowlist")?)
                .bind(json_text(c.team_ids.as_deref(), "team_ids")?)
                .bind(c.created_by)
                .bind(c.previous_password_hash.as_deref())
                .bind(c.previous_password_until)
                .bind(c.query_count)
                .bind(c.response_bytes)
                .bind(c.last_used_at),
            )
            .await?;
        }
        for e in &dump.webhook_endpoints {
            tx.execute(
                &Statement::new(format!(
                    "INSERT INTO webhook_endpoints ({WEBHOOK_ENDPOINT_DUMP_COLUMNS}) VALUES ({})",
                    placeholders(6)
                ))
                .bind(e.id.as_str())
                .bind(e.source.as_str())
                .bind(e.url.as_str())
                .bind(e.events.as_str())
                .bind(e.sealed_secret.as_deref())
                .bind(e.created_at),
            )
            .await?;
        }
        for v in &dump.vault_secrets {
            tx.execute(
                &Statement::new(
                    "INSERT INTO vault_secrets (id, environment, secret_hash, created_at) VALUES ($1, $2, $3, $4)",
                )
                .bind(v.id)
                .bind(v.environment.as_str())
                .bind(v.secret_hash.as_slice())
                .bind(v.created_at),
            )
            .await?;
        }
        for c in &dump.integration_connections {
            tx.execute(
                &Statement::new(format!(
                    "INSERT INTO integration_connections ({INTEGRATION_DUMP_COLUMNS}) VALUES ({})",
                    placeholders(22)
                ))
                .bind(c.id.as_str())
                .bind(c.environment.as_str())
                .bind(c.platform.as_str())
                .bind(c.platform_version.as_str())
                .bind(c.name.as_deref())
                .bind(c.connection_key.as_str())
                .bind(c.identity.as_str())
                .bind(c.identity_type.as_str())
                .bind(json_text(Some(&c.tags), "tags")?)
                .bind(c.version.as_str())
                .bind(c.active)
                .bind(c.state.as_str())
                .bind(c.created_at)
                .bind(c.sealed_credentials.as_slice())
                .bind(c.credential_generation)
                .bind(c.expires_at)
                .bind(c.retry_at)
                .bind(c.refresh_attempts)
                .bind(c.consecutive_failures)
                .bind(c.last_error.as_deref())
                .bind(c.last_error_at)
                .bind(c.last_refresh_at),
            )
            .await?;
            let tags: Vec<String> = serde_json::from_str(&c.tags).map_err(|_| {
                StoreError::Corrupt(format!("integration connection {}: tags", c.id))
            })?;
            for tag in tags {
                tx.execute(&sql::insert_tag(&c.id, &tag)).await?;
            }
        }
        // PostgreSQL's sequences do not move past explicitly given ids (SQLite's
        // AUTOINCREMENT does by itself): move each past the imported ones.
        if self.dialect == Dialect::Postgres {
            for table in ["users", "api_tokens", "data_connections", "vault_secrets"] {
                tx.execute(&Statement::new(format!(
                    "SELECT setval(pg_get_serial_sequence('{table}', 'id'), \
                     COALESCE((SELECT MAX(id) FROM {table}), 0) + 1, false)"
                )))
                .await?;
            }
        }
        tx.commit().await
    }
}
