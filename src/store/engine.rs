//! Running shared SQL on either database. A [`Statement`] is SQL text with `$1`, `$2`, ...
//! placeholders (PostgreSQL's own; sqlx's SQLite driver binds them the same way, by
//! number) and its values; rows come back as plain [`Row`]s decoded by the column kinds the
//! statement declares. The one generic [`Backend`] impl below is the only code that knows
//! it is talking to sqlx: everything above it is written once for both databases.

use std::borrow::Cow;

use async_trait::async_trait;
use futures_util::future::BoxFuture;
use sqlx::{ColumnIndex, Database, Decode, Encode, Executor, IntoArguments, Type};

use crate::domain::ports::StoreError;

/// A value bound into a statement.
#[derive(Debug, Clone)]
pub enum Bind {
    Text(String),
    OptText(Option<String>),
    Int(i64),
    OptInt(Option<i64>),
    Bool(bool),
    Bytes(Vec<u8>),
    OptBytes(Option<Vec<u8>>),
    /// JSON for a JSON column (PostgreSQL's `jsonb`, SQLite's JSON text); `None` is NULL.
    Json(Option<serde_json::Value>),
}

impl From<&str> for Bind {
    fn from(v: &str) -> Self {
        Self::Text(v.to_owned())
    }
}

impl From<String> for Bind {
    fn from(v: String) -> Self {
        Self::Text(v)
    }
}

impl From<Option<&str>> for Bind {
    fn from(v: Option<&str>) -> Self {
        Self::OptText(v.map(str::to_owned))
    }
}

impl From<Option<String>> for Bind {
    fn from(v: Option<String>) -> Self {
        Self::OptText(v)
    }
}

impl From<i64> for Bind {
    fn from(v: i64) -> Self {
        Self::Int(v)
    }
}

impl From<Option<i64>> for Bind {
    fn from(v: Option<i64>) -> Self {
        Self::OptInt(v)
    }
}

impl From<bool> for Bind {
    fn from(v: bool) -> Self {
        Self::Bool(v)
    }
}

impl From<Option<&[u8]>> for Bind {
    fn from(v: Option<&[u8]>) -> Self {
        Self::OptBytes(v.map(<[u8]>::to_vec))
    }
}

impl From<&[u8]> for Bind {
    fn from(v: &[u8]) -> Self {
        Self::Bytes(v.to_vec())
    }
}

/// What a result column holds; nullable in every case.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Int,
    Text,
    Bool,
    Bytes,
}

/// A decoded column value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    Null,
    Int(i64),
    Text(String),
    Bool(bool),
    Bytes(Vec<u8>),
}

/// One result row, taken apart column by column.
#[derive(Debug)]
pub struct Row {
    values: Vec<Value>,
}

fn mismatch(index: usize, want: &str, got: &Value) -> StoreError {
    StoreError::Corrupt(format!("column {index}: expected {want}, found {got:?}"))
}

impl Row {
    fn take(&mut self, index: usize) -> Value {
        self.values
            .get_mut(index)
            .map_or(Value::Null, |v| std::mem::replace(v, Value::Null))
    }

    pub fn opt_int(&mut self, index: usize) -> Result<Option<i64>, StoreError> {
        match self.take(index) {
            Value::Null => Ok(None),
            Value::Int(v) => Ok(Some(v)),
            other => Err(mismatch(index, "an integer", &other)),
        }
    }

    pub fn int(&mut self, index: usize) -> Result<i64, StoreError> {
        self.opt_int(index)?
            .ok_or_else(|| mismatch(index, "an integer", &Value::Null))
    }

    pub fn opt_text(&mut self, index: usize) -> Result<Option<String>, StoreError> {
        match self.take(index) {
            Value::Null => Ok(None),
            Value::Text(v) => Ok(Some(v)),
            other => Err(mismatch(index, "text", &other)),
        }
    }

    pub fn text(&mut self, index: usize) -> Result<String, StoreError> {
        self.opt_text(index)?
            .ok_or_else(|| mismatch(index, "text", &Value::Null))
    }

    pub fn bool(&mut self, index: usize) -> Result<bool, StoreError> {
        match self.take(index) {
            Value::Bool(v) => Ok(v),
            other => Err(mismatch(index, "a boolean", &other)),
        }
    }

    pub fn bytes(&mut self, index: usize) -> Result<Vec<u8>, StoreError> {
        match self.take(index) {
            Value::Bytes(v) => Ok(v),
            other => Err(mismatch(index, "bytes", &other)),
        }
    }

    pub fn opt_bytes(&mut self, index: usize) -> Result<Option<Vec<u8>>, StoreError> {
        match self.take(index) {
            Value::Null => Ok(None),
            Value::Bytes(v) => Ok(Some(v)),
            other => Err(mismatch(index, "bytes", &other)),
        }
    }
}

/// SQL text, its values, and the kinds of the columns it returns (empty for a write).
#[derive(Debug, Clone)]
pub struct Statement {
    sql: Cow<'static, str>,
    binds: Vec<Bind>,
    columns: &'static [Kind],
}

impl Statement {
    pub fn new(sql: impl Into<Cow<'static, str>>) -> Self {
        Self {
            sql: sql.into(),
            binds: Vec::new(),
            columns: &[],
        }
    }

    /// Appends the value of the next placeholder.
    pub fn bind(mut self, value: impl Into<Bind>) -> Self {
        self.binds.push(value.into());
        self
    }

    pub fn bind_all(mut self, values: impl IntoIterator<Item = Bind>) -> Self {
        self.binds.extend(values);
        self
    }

    /// Declares what the statement's rows hold.
    pub fn returns(mut self, columns: &'static [Kind]) -> Self {
        self.columns = columns;
        self
    }

    pub fn sql(&self) -> &str {
        &self.sql
    }
}

/// The database-specific half of running a statement; implemented once, generically, for
/// every sqlx database that can bind and decode the values above.
pub trait Backend: Database {
    fn run<'c>(
        conn: &'c mut Self::Connection,
        statement: &'c Statement,
    ) -> BoxFuture<'c, Result<u64, sqlx::Error>>;

    fn rows<'c>(
        conn: &'c mut Self::Connection,
        statement: &'c Statement,
    ) -> BoxFuture<'c, Result<Vec<Row>, sqlx::Error>>;
}

fn bound<'q, DB>(statement: &'q Statement) -> sqlx::query::Query<'q, DB, DB::Arguments<'q>>
where
    DB: Database,
    &'q str: Encode<'q, DB> + Type<DB>,
    Option<&'q str>: Encode<'q, DB> + Type<DB>,
    i64: Encode<'q, DB> + Type<DB>,
    Option<i64>: Encode<'q, DB> + Type<DB>,
    bool: Encode<'q, DB> + Type<DB>,
    &'q [u8]: Encode<'q, DB> + Type<DB>,
    Option<&'q [u8]>: Encode<'q, DB> + Type<DB>,
    Option<sqlx::types::Json<&'q serde_json::Value>>: Encode<'q, DB> + Type<DB>,
{
    let mut query = sqlx::query(statement.sql());
    for b in &statement.binds {
        query = match b {
            Bind::Text(v) => query.bind(v.as_str()),
            Bind::OptText(v) => query.bind(v.as_deref()),
            Bind::Int(v) => query.bind(*v),
            Bind::OptInt(v) => query.bind(*v),
            Bind::Bool(v) => query.bind(*v),
            Bind::Bytes(v) => query.bind(v.as_slice()),
            Bind::OptBytes(v) => query.bind(v.as_deref()),
            Bind::Json(v) => query.bind(v.as_ref().map(sqlx::types::Json)),
        };
    }
    query
}

fn decode<R>(row: &R, columns: &[Kind]) -> Result<Row, sqlx::Error>
where
    R: sqlx::Row,
    usize: ColumnIndex<R>,
    for<'r> Option<i64>: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> Option<String>: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> Option<bool>: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> Option<Vec<u8>>: Decode<'r, R::Database> + Type<R::Database>,
{
    let values = columns
        .iter()
        .enumerate()
        .map(|(i, kind)| {
            Ok(match kind {
                Kind::Int => row.try_get::<Option<i64>, _>(i)?.map(Value::Int),
                Kind::Text => row.try_get::<Option<String>, _>(i)?.map(Value::Text),
                Kind::Bool => row.try_get::<Option<bool>, _>(i)?.map(Value::Bool),
                Kind::Bytes => row.try_get::<Option<Vec<u8>>, _>(i)?.map(Value::Bytes),
            }
            .unwrap_or(Value::Null))
        })
        .collect::<Result<_, sqlx::Error>>()?;
    Ok(Row { values })
}

/// How many rows a write changed; sqlx has it on each database's own result type.
pub trait RowsAffected {
    fn rows_affected(&self) -> u64;
}

impl RowsAffected for sqlx::sqlite::SqliteQueryResult {
    fn rows_affected(&self) -> u64 {
        self.rows_affected()
    }
}

impl RowsAffected for sqlx::postgres::PgQueryResult {
    fn rows_affected(&self) -> u64 {
        self.rows_affected()
    }
}

impl<DB> Backend for DB
where
    DB: Database,
    DB::QueryResult: RowsAffected,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    for<'q> Option<&'q str>: Encode<'q, DB> + Type<DB>,
    for<'q> i64: Encode<'q, DB> + Type<DB>,
    for<'q> Option<i64>: Encode<'q, DB> + Type<DB>,
    for<'q> bool: Encode<'q, DB> + Type<DB>,
    for<'q> &'q [u8]: Encode<'q, DB> + Type<DB>,
    for<'q> Option<&'q [u8]>: Encode<'q, DB> + Type<DB>,
    for<'q> Option<sqlx::types::Json<&'q serde_json::Value>>: Encode<'q, DB> + Type<DB>,
    usize: ColumnIndex<DB::Row>,
    for<'r> Option<i64>: Decode<'r, DB> + Type<DB>,
    for<'r> Option<String>: Decode<'r, DB> + Type<DB>,
    for<'r> Option<bool>: Decode<'r, DB> + Type<DB>,
    for<'r> Option<Vec<u8>>: Decode<'r, DB> + Type<DB>,
{
    fn run<'c>(
        conn: &'c mut Self::Connection,
        statement: &'c Statement,
    ) -> BoxFuture<'c, Result<u64, sqlx::Error>> {
        Box::pin(async move {
            let done = bound::<DB>(statement).execute(conn).await?;
            Ok(RowsAffected::rows_affected(&done))
        })
    }

    fn rows<'c>(
        conn: &'c mut Self::Connection,
        statement: &'c Statement,
    ) -> BoxFuture<'c, Result<Vec<Row>, sqlx::Error>> {
        Box::pin(async move {
            let rows = bound::<DB>(statement).fetch_all(conn).await?;
            rows.iter()
                .map(|row| decode(row, statement.columns))
                .collect()
        })
    }
}

/// A connection pool of one database, as the shared store code sees it.
#[async_trait]
pub trait Engine: Send + Sync {
    /// Runs a write; returns how many rows it changed.
    async fn execute(&self, statement: &Statement) -> Result<u64, StoreError>;
    async fn fetch(&self, statement: &Statement) -> Result<Vec<Row>, StoreError>;
    async fn begin(&self) -> Result<Box<dyn Transaction>, StoreError>;

    async fn fetch_optional(&self, statement: &Statement) -> Result<Option<Row>, StoreError> {
        Ok(self.fetch(statement).await?.into_iter().next())
    }

    async fn fetch_one(&self, statement: &Statement) -> Result<Row, StoreError> {
        self.fetch_optional(statement)
            .await?
            .ok_or_else(|| StoreError::Corrupt(format!("no row from: {}", statement.sql())))
    }
}

/// Statements run in one transaction; dropped without [`Transaction::commit`], it rolls
/// back.
#[async_trait]
pub trait Transaction: Send {
    async fn execute(&mut self, statement: &Statement) -> Result<u64, StoreError>;
    async fn fetch(&mut self, statement: &Statement) -> Result<Vec<Row>, StoreError>;
    async fn commit(self: Box<Self>) -> Result<(), StoreError>;

    async fn fetch_one(&mut self, statement: &Statement) -> Result<Row, StoreError> {
        self.fetch(statement)
            .await?
            .into_iter()
            .next()
            .ok_or_else(|| StoreError::Corrupt(format!("no row from: {}", statement.sql())))
    }
}

#[async_trait]
impl<DB: Backend> Engine for sqlx::Pool<DB> {
    async fn execute(&self, statement: &Statement) -> Result<u64, StoreError> {
        let mut conn = self.acquire().await.map_err(store_error)?;
        DB::run(&mut conn, statement).await.map_err(store_error)
    }

    async fn fetch(&self, statement: &Statement) -> Result<Vec<Row>, StoreError> {
        let mut conn = self.acquire().await.map_err(store_error)?;
        DB::rows(&mut conn, statement).await.map_err(store_error)
    }

    async fn begin(&self) -> Result<Box<dyn Transaction>, StoreError> {
        Ok(Box::new(
            sqlx::Pool::begin(self).await.map_err(store_error)?,
        ))
    }
}

#[async_trait]
impl<DB: Backend> Transaction for sqlx::Transaction<'static, DB> {
    async fn execute(&mut self, statement: &Statement) -> Result<u64, StoreError> {
        DB::run(self, statement).await.map_err(store_error)
    }

    async fn fetch(&mut self, statement: &Statement) -> Result<Vec<Row>, StoreError> {
        DB::rows(self, statement).await.map_err(store_error)
    }

    async fn commit(self: Box<Self>) -> Result<(), StoreError> {
        sqlx::Transaction::commit(*self).await.map_err(store_error)
    }
}

/// Why sqlx failed, as the domain sees it: a unique constraint is a conflict the caller
/// can act on; a database out of reach is unavailability (503), anything else a failure.
pub fn store_error(e: sqlx::Error) -> StoreError {
    match e {
        sqlx::Error::Database(db) if db.is_unique_violation() => {
            StoreError::Conflict(db.message().to_owned())
        }
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => StoreError::Unavailable(Box::new(e)),
        other => StoreError::Backend(Box::new(other)),
    }
}
