//! PostgreSQL plumbing shared by the storage backends that keep their state in a database: the
//! connection settings, a pool on a runtime of its own (so that blocking callers can use it),
//! TLS to the server, versioned schema migrations, and a connection of its own that `LISTEN`s
//! for notifications ([`Database::listen`]).
//!
//! The backends' traits are blocking (async callers use `spawn_blocking`); [`Database::run`]
//! runs one piece of async database work to its end on the pool's runtime, from any thread,
//! and gives up with [`DbError::Timeout`] past the configured limits rather than hang.

mod listen;
mod migrate;
mod settings;
mod tls;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};

pub use listen::Heard;
pub use migrate::{Migration, MIGRATIONS, SCHEMA_VERSION};
pub use settings::{node_id_file, PasswordSource, PgSettings, PgTls};

/// Connections kept open per process.
const POOL_SIZE: usize = 8;

/// What can go wrong talking to the database.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// The server refused, dropped the connection, or failed a statement.
    #[error("{}", describe(.0))]
    Postgres(#[from] tokio_postgres::Error),
    /// No connection could be had from the pool (server down, pool exhausted).
    #[error("no database connection: {0}")]
    Pool(String),
    /// The work took longer than the configured limits.
    #[error("no answer from the database within {0:?}")]
    Timeout(Duration),
    /// The settings cannot be used (password file unreadable, CA file bad, ...).
    #[error("{0}")]
    Settings(String),
    /// The database holds a schema newer than this program knows.
    #[error(
        "the database schema is version {found}, newer than version {known} that this sealpost \
         knows: upgrade sealpost (or point it at another database)"
    )]
    SchemaTooNew { found: i32, known: i32 },
}

/// A pool of connections to one database, on a runtime of its own.
pub struct Database {
    runtime: Option<tokio::runtime::Runtime>,
    pool: Pool,
    /// The URL without any password, for logs and messages.
    location: String,
    /// The limit on one piece of work ([`Database::run`]).
    limit: Duration,
    /// For connections outside the pool ([`Database::listen`]).
    settings: PgSettings,
}

impl Database {
    /// Opens the pool (connecting lazily) and applies the schema migrations ([`MIGRATIONS`]);
    /// refuses a database whose schema is newer. Blocking.
    pub fn open(settings: &PgSettings) -> Result<Arc<Database>, DbError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("sealpost-pg")
            .enable_all()
            .build()
            .map_err(|e| DbError::Settings(format!("cannot start the database runtime: {e}")))?;
        let mut config = settings.connect_config()?;
        config.connect_timeout(settings.connect_timeout);
        // Every commit waits for the WAL flush (whatever the server's default), and no statement
        // runs longer than the limit.
        config.options(format!(
            "-c synchronous_commit=on -c statement_timeout={}",
            settings.statement_timeout.as_millis()
        ));
        // A connection taken from the pool is checked for being closed (the server went away,
        // which the connection's task sees at once), not with a query: a query per checkout
        // was a round trip, and a transaction, per statement. A connection broken without a
        // word fails its statement, which the caller reports as the database being unavailable.
        let manager_config = ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        };
        let manager = match settings.tls {
            PgTls::Disable => Manager::from_config(config, tokio_postgres::NoTls, manager_config),
            PgTls::Prefer | PgTls::Require => Manager::from_config(
                config,
                tls::connector(settings.ca_file.as_deref())?,
                manager_config,
            ),
        };
        let pool = Pool::builder(manager)
            .max_size(POOL_SIZE)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(settings.connect_timeout))
            .create_timeout(Some(settings.connect_timeout))
            .recycle_timeout(Some(settings.connect_timeout))
            .build()
            .map_err(|e| DbError::Settings(format!("cannot build the connection pool: {e}")))?;
        let db = Database {
            runtime: Some(runtime),
            pool,
            location: settings.location(),
            limit: settings.connect_timeout + settings.statement_timeout,
            settings: settings.clone(),
        };
        let db = Arc::new(db);
        db.run(|pool| async move { migrate::apply(&pool).await })?;
        Ok(db)
    }

    /// The database as named in logs: the URL without a password.
    pub fn location(&self) -> &str {
        &self.location
    }

    /// Runs `work` on the pool's runtime and waits for it, from any thread (inside an async
    /// task too, though that blocks the task's thread like any other blocking call). Gives up
    /// with [`DbError::Timeout`] when it takes longer than the connect and statement timeouts
    /// together.
    pub fn run<T, F, Fut>(&self, work: F) -> Result<T, DbError>
    where
        T: Send,
        F: FnOnce(Pool) -> Fut + Send,
        Fut: Future<Output = Result<T, DbError>> + Send,
    {
        let Some(runtime) = &self.runtime else {
            return Err(DbError::Pool("the database runtime has stopped".into()));
        };
        let pool = self.pool.clone();
        let limit = self.limit;
        // Polled on this thread (no thread of its own per call), with the pool's runtime as the
        // context of what it creates (connections, timers): that runtime's threads drive the
        // sockets and timers and wake this one. Unconstrained: a caller inside an async task
        // must not find its task's cooperative budget spent by the database's futures.
        let _context = runtime.handle().enter();
        block_here(tokio::task::unconstrained(async move {
            match tokio::time::timeout(limit, work(pool)).await {
                Ok(result) => result,
                Err(_) => Err(DbError::Timeout(limit)),
            }
        }))
    }

    /// Runs one future (e.g. statements on a connection held across calls, as a transaction
    /// does) on the pool's runtime and waits for it, within the same limit as [`Database::run`].
    pub fn block_on<T, Fut>(&self, work: Fut) -> Result<T, DbError>
    where
        T: Send,
        Fut: Future<Output = Result<T, DbError>> + Send,
    {
        self.run(|_| work)
    }

    /// A connection of the pool, held until dropped (for a transaction over several calls).
    pub fn connection(&self) -> Result<deadpool_postgres::Client, DbError> {
        self.run(|pool| async move { connection(&pool).await })
    }

    /// Starts `task` on the pool's runtime, where it runs until the database is dropped.
    pub fn spawn<F, Fut>(&self, task: F)
    where
        F: FnOnce(Pool) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        if let Some(runtime) = &self.runtime {
            runtime.spawn(task(self.pool.clone()));
        }
    }
}

impl Database {
    /// Keeps a connection of its own (outside the pool) listening on `channel` for as long as
    /// the database is open, and calls `on` for each notification, and once after each
    /// reconnect ([`Heard::Resumed`]: notifications may have been missed). A lost connection is
    /// made again with backoff; nothing else waits for it.
    pub fn listen(&self, channel: &'static str, on: impl Fn(Heard<'_>) + Send + Sync + 'static) {
        let (settings, location, limit) =
            (self.settings.clone(), self.location.clone(), self.limit);
        self.spawn(move |_| listen::run(settings, location, channel, limit, on));
    }
}

impl Drop for Database {
    fn drop(&mut self) {
        self.pool.close();
        // Dropping a runtime may not block inside another runtime's task; this does not.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// The error with its cause: tokio-postgres shows "db error" alone and keeps the server's
/// message (or the TLS failure) as the source.
fn describe(error: &tokio_postgres::Error) -> String {
    match std::error::Error::source(error) {
        Some(cause) => format!("{error}: {cause}"),
        None => error.to_string(),
    }
}

/// A connection from the pool, the failure typed.
pub async fn connection(pool: &Pool) -> Result<deadpool_postgres::Client, DbError> {
    pool.get().await.map_err(|e| match e {
        deadpool_postgres::PoolError::Backend(e) => DbError::Postgres(e),
        other => DbError::Pool(other.to_string()),
    })
}

/// Polls `future` on the calling thread until it is ready, parking the thread in between; its
/// wakers unpark it.
fn block_here<F: Future>(future: F) -> F::Output {
    struct Unpark(std::thread::Thread);
    impl std::task::Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
        fn wake_by_ref(self: &Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = std::task::Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = std::task::Context::from_waker(&waker);
    let mut future = std::pin::pin!(future);
    loop {
        if let std::task::Poll::Ready(output) = future.as_mut().poll(&mut cx) {
            return output;
        }
        std::thread::park();
    }
}
