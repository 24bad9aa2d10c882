//! The statements of the PostgreSQL queue, one function per operation. Each is one statement
//! (autocommit) or one transaction, committed before it returns.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use deadpool_postgres::Pool;

use crate::pg::{connection, DbError};
use crate::queue::backend::QueueState;

/// A message as the table keeps it.
pub(super) struct Row {
    pub id: String,
    pub envelope: Vec<u8>,
    pub next_attempt: i64,
    pub size: i64,
    pub body: Vec<u8>,
    /// The transmission's fingerprint (raw bytes) and when it was accepted, recorded in
    /// `queue_transmission` by the statement that queues the message.
    pub transmission: Option<(Vec<u8>, i64)>,
}

impl Row {
    /// What [`Row::transmission`] holds for a message with this envelope.
    pub fn transmission_of(envelope: &crate::queue::Envelope) -> Option<(Vec<u8>, i64)> {
        let fingerprint = crate::queue::retransmit::raw(envelope.transmission.as_deref()?)?;
        Some((fingerprint.to_vec(), envelope.received_at))
    }
}

/// A waiting message: incoming or deferred, or active under a lease that has expired (held by
/// a node that stopped).
const WAITING: &str = "(state IN ('incoming', 'deferred') \
                        OR (state = 'active' AND lease_until < clock_timestamp()))";

/// A statement parsed and planned once per connection and kept (the queue runs the same few
/// statements for every message), instead of once per call.
async fn prepared(
    client: &deadpool_postgres::Client,
    sql: &str,
) -> Result<tokio_postgres::Statement, DbError> {
    Ok(client.prepare_cached(sql).await?)
}

fn seconds(lease: Duration) -> f64 {
    lease.as_secs_f64()
}

/// Inserts a new message in `state`: incoming, or (a message moved from a spool) deferred
/// until its next attempt or held; false when the id is queued already. Its transmission's
/// fingerprint, if any, is recorded by the same statement: it commits with the message, or
/// neither does.
///
/// With a `lease` (the node and how long), the message is inserted active under that lease:
/// claimed by the node as it is queued (`enqueue_claimed`).
pub(super) async fn insert(
    pool: &Pool,
    row: &Row,
    state: QueueState,
    lease: Option<(&str, Duration)>,
) -> Result<bool, DbError> {
    let state = state.as_str();
    let (lease_node, lease_secs) = match lease {
        Some((node, lease)) => (Some(node), Some(seconds(lease))),
        None => (None, None),
    };
    let (fingerprint, accepted_at) = match &row.transmission {
        Some((fingerprint, at)) => (Some(fingerprint.as_slice()), Some(*at)),
        None => (None, None),
    };
    let client = connection(pool).await?;
    let inserted = client
        .query_one(
            &prepared(
                &client,
                "WITH queued AS ( \
                 INSERT INTO queue_message (id, state, envelope, next_attempt, size, body, \
                     lease_node, lease_until) \
                 VALUES ($1, $6, $2, $3, $4, $5, $9, \
                     clock_timestamp() + make_interval(secs => $10::float8)) \
                 ON CONFLICT (id) DO NOTHING RETURNING id), \
             seen AS ( \
                 INSERT INTO queue_transmission (fingerprint, id, accepted_at) \
                 SELECT $7, id, $8 FROM queued WHERE $7::bytea IS NOT NULL \
                 ON CONFLICT DO NOTHING) \
             SELECT count(*) FROM queued",
            )
            .await?,
            &[
                &row.id,
                &row.envelope,
                &row.next_attempt,
                &row.size,
                &row.body,
                &state,
                &fingerprint,
                &accepted_at,
                &lease_node,
                &lease_secs,
            ],
        )
        .await?;
    Ok(inserted.get::<_, i64>(0) == 1)
}

/// The ids (space-separated, in id order) of the messages accepted with `fingerprint` at or
/// after `since`, by any node; `None` when there are none.
pub(super) async fn transmission(
    pool: &Pool,
    fingerprint: &[u8],
    since: i64,
) -> Result<Option<String>, DbError> {
    let client = connection(pool).await?;
    let row = client
        .query_one(
            &prepared(
                &client,
                "SELECT string_agg(id, ' ' ORDER BY id) FROM queue_transmission \
             WHERE fingerprint = $1 AND accepted_at >= $2",
            )
            .await?,
            &[&fingerprint, &since],
        )
        .await?;
    Ok(row.get(0))
}

/// Forgets the transmissions accepted before `before`; how many rows went.
pub(super) async fn forget_transmissions(pool: &Pool, before: i64) -> Result<u64, DbError> {
    let client = connection(pool).await?;
    Ok(client
        .execute(
            &prepared(
                &client,
                "DELETE FROM queue_transmission WHERE accepted_at < $1",
            )
            .await?,
            &[&before],
        )
        .await?)
}

/// Takes a waiting message for `node`; its stored body, or `None` when it is not waiting.
pub(super) async fn claim(
    pool: &Pool,
    id: &str,
    node: &str,
    lease: Duration,
) -> Result<Option<Vec<u8>>, DbError> {
    let client = connection(pool).await?;
    let row = client
        .query_opt(
            &prepared(
                &client,
                &format!(
                    "UPDATE queue_message SET state = 'active', lease_node = $2, \
                 lease_until = clock_timestamp() + make_interval(secs => $3), \
                 changed_at = clock_timestamp() \
                 WHERE id = $1 AND {WAITING} RETURNING body"
                ),
            )
            .await?,
            &[&id, &node, &seconds(lease)],
        )
        .await?;
    Ok(row.map(|r| r.get(0)))
}

/// Stores a new body and envelope for an active message `node` holds and moves it to `next`
/// (deferred, or active again with a fresh lease); false when `node` does not hold it.
pub(super) async fn update_active(
    pool: &Pool,
    row: &Row,
    node: &str,
    next: QueueState,
    lease: Duration,
) -> Result<bool, DbError> {
    let client = connection(pool).await?;
    let n =
        match next {
            QueueState::Active => client
                .execute(
                    &prepared(
                        &client,
                        "UPDATE queue_message SET envelope = $2, next_attempt = $3, size = $4, \
                     body = $5, lease_until = clock_timestamp() + make_interval(secs => $7), \
                     changed_at = clock_timestamp() \
                     WHERE id = $1 AND state = 'active' AND lease_node = $6",
                    )
                    .await?,
                    &[
                        &row.id,
                        &row.envelope,
                        &row.next_attempt,
                        &row.size,
                        &row.body,
                        &node,
                        &seconds(lease),
                    ],
                )
                .await?,
            QueueState::Deferred | QueueState::Incoming | QueueState::Hold => client
                .execute(
                    &prepared(
                        &client,
                        "UPDATE queue_message SET state = $7, envelope = $2, next_attempt = $3, \
                     size = $4, body = $5, lease_node = NULL, lease_until = NULL, \
                     changed_at = clock_timestamp() \
                     WHERE id = $1 AND state = 'active' AND lease_node = $6",
                    )
                    .await?,
                    &[
                        &row.id,
                        &row.envelope,
                        &row.next_attempt,
                        &row.size,
                        &row.body,
                        &node,
                        &next.as_str(),
                    ],
                )
                .await?,
        };
    Ok(n == 1)
}

/// Removes an active message `node` holds; false when it does not hold it.
pub(super) async fn complete(pool: &Pool, id: &str, node: &str) -> Result<bool, DbError> {
    let client = connection(pool).await?;
    let n = client
        .execute(
            &prepared(
                &client,
                "DELETE FROM queue_message WHERE id = $1 AND state = 'active' AND lease_node = $2",
            )
            .await?,
            &[&id, &node],
        )
        .await?;
    Ok(n == 1)
}

/// Moves an active message `node` holds to the quarantine; returns its number there.
pub(super) async fn quarantine(
    pool: &Pool,
    id: &str,
    node: &str,
    reason: &str,
) -> Result<i64, DbError> {
    let mut client = connection(pool).await?;
    let tx = client.transaction().await?;
    let row = tx
        .query_one(
            "INSERT INTO queue_quarantine (id, reason, body) \
             SELECT id, $3, body FROM queue_message \
             WHERE id = $1 AND state = 'active' AND lease_node = $2 RETURNING seq",
            &[&id, &node, &reason],
        )
        .await?;
    tx.execute("DELETE FROM queue_message WHERE id = $1", &[&id])
        .await?;
    tx.commit().await?;
    Ok(row.get(0))
}

/// Every queued message: state, id, envelope JSON, size.
pub(super) async fn listing(
    pool: &Pool,
) -> Result<Vec<(QueueState, String, Vec<u8>, i64)>, DbError> {
    let client = connection(pool).await?;
    let rows = client
        .query(
            &prepared(
                &client,
                "SELECT state, id, envelope, size FROM queue_message ORDER BY id",
            )
            .await?,
            &[],
        )
        .await?;
    Ok(rows
        .into_iter()
        .filter_map(|r| {
            let state = state_named(r.get(0))?;
            Some((state, r.get(1), r.get(2), r.get(3)))
        })
        .collect())
}

fn state_named(name: &str) -> Option<QueueState> {
    QueueState::ALL.into_iter().find(|s| s.as_str() == name)
}

/// Incoming ids and those of expired leases, oldest first.
pub(super) async fn incoming_ids(pool: &Pool) -> Result<Vec<String>, DbError> {
    let client = connection(pool).await?;
    let rows = client
        .query(
            &prepared(
                &client,
                "SELECT id FROM queue_message WHERE state = 'incoming' \
             OR (state = 'active' AND lease_until < clock_timestamp()) ORDER BY id",
            )
            .await?,
            &[],
        )
        .await?;
    Ok(rows.into_iter().map(|r| r.get(0)).collect())
}

/// Deferred ids with their next attempt, by id.
pub(super) async fn deferred(pool: &Pool) -> Result<Vec<(String, i64)>, DbError> {
    let client = connection(pool).await?;
    let rows = client
        .query(
            &prepared(
                &client,
                "SELECT id, next_attempt FROM queue_message WHERE state = 'deferred' ORDER BY id",
            )
            .await?,
            &[],
        )
        .await?;
    Ok(rows.into_iter().map(|r| (r.get(0), r.get(1))).collect())
}

/// The size of a waiting message.
pub(super) async fn waiting_size(pool: &Pool, id: &str) -> Result<Option<i64>, DbError> {
    let client = connection(pool).await?;
    let row = client
        .query_opt(
            &prepared(
                &client,
                &format!("SELECT size FROM queue_message WHERE id = $1 AND {WAITING}"),
            )
            .await?,
            &[&id],
        )
        .await?;
    Ok(row.map(|r| r.get(0)))
}

/// Deferred → incoming; how many moved.
pub(super) async fn flush(pool: &Pool) -> Result<usize, DbError> {
    let client = connection(pool).await?;
    let n = client
        .execute(
            &prepared(
                &client,
                "UPDATE queue_message SET state = 'incoming', changed_at = clock_timestamp() \
             WHERE state = 'deferred'",
            )
            .await?,
            &[],
        )
        .await?;
    Ok(usize::try_from(n).unwrap_or(usize::MAX))
}

/// What [`hold`] found.
pub(super) enum HoldOutcome {
    /// The message was waiting and is held now.
    Held,
    /// Active under a live lease, being delivered by the node named: nothing changed.
    Active(String),
    /// Unknown, held already, or gone.
    NotWaiting,
}

/// Waiting → hold, clearing an expired lease; else whether a live node has it active.
pub(super) async fn hold(pool: &Pool, id: &str) -> Result<HoldOutcome, DbError> {
    let client = connection(pool).await?;
    let n = client
        .execute(
            &prepared(
                &client,
                &format!(
                    "UPDATE queue_message SET state = 'hold', lease_node = NULL, \
                 lease_until = NULL, changed_at = clock_timestamp() \
                 WHERE id = $1 AND {WAITING}"
                ),
            )
            .await?,
            &[&id],
        )
        .await?;
    if n == 1 {
        return Ok(HoldOutcome::Held);
    }
    let active = client
        .query_opt(
            &prepared(
                &client,
                "SELECT lease_node FROM queue_message WHERE id = $1 AND state = 'active'",
            )
            .await?,
            &[&id],
        )
        .await?;
    Ok(match active {
        Some(row) => HoldOutcome::Active(row.get::<_, Option<String>>(0).unwrap_or_default()),
        None => HoldOutcome::NotWaiting,
    })
}

/// The body of a held message and the version of its row (when it last changed, in
/// microseconds); `None` when it is not held.
pub(super) async fn held(pool: &Pool, id: &str) -> Result<Option<(Vec<u8>, i64)>, DbError> {
    let client = connection(pool).await?;
    let row = client
        .query_opt(
            &prepared(
                &client,
                &format!(
                    "SELECT body, {VERSION} FROM queue_message WHERE id = $1 AND state = 'hold'"
                ),
            )
            .await?,
            &[&id],
        )
        .await?;
    Ok(row.map(|r| (r.get(0), r.get(1))))
}

/// When a row last changed, in microseconds: what [`held`] reads and [`release`] compares.
const VERSION: &str = "(extract(epoch FROM changed_at) * 1000000)::bigint";

/// Hold → incoming, with the envelope and body of `row` (the release recorded in them) if
/// given, then only if the row is still the `version` [`held`] read; false when the message is
/// not held (or, with a row, changed meanwhile).
pub(super) async fn release(
    pool: &Pool,
    id: &str,
    row: Option<(&Row, i64)>,
) -> Result<bool, DbError> {
    let client = connection(pool).await?;
    let n = match row {
        None => client
            .execute(
                &prepared(
                    &client,
                    "UPDATE queue_message SET state = 'incoming', changed_at = clock_timestamp() \
                         WHERE id = $1 AND state = 'hold'",
                )
                .await?,
                &[&id],
            )
            .await?,
        Some((row, version)) => {
            client
                .execute(
                    &prepared(
                        &client,
                        &format!(
                        "UPDATE queue_message SET state = 'incoming', envelope = $2, body = $3, \
                             changed_at = clock_timestamp() \
                             WHERE id = $1 AND state = 'hold' AND {VERSION} = $4"
                    ),
                    )
                    .await?,
                    &[&id, &row.envelope, &row.body, &version],
                )
                .await?
        }
    };
    Ok(n == 1)
}

/// Deletes a message in any state.
pub(super) async fn delete(pool: &Pool, id: &str) -> Result<bool, DbError> {
    let client = connection(pool).await?;
    let n = client
        .execute(
            &prepared(&client, "DELETE FROM queue_message WHERE id = $1").await?,
            &[&id],
        )
        .await?;
    Ok(n == 1)
}

/// Startup: active messages of `node` itself (from before its restart) and those whose lease
/// expired go back to incoming; none another live node holds.
pub(super) async fn recover(pool: &Pool, node: &str) -> Result<usize, DbError> {
    let client = connection(pool).await?;
    let n = client
        .execute(
            &prepared(
                &client,
                "UPDATE queue_message SET state = 'incoming', lease_node = NULL, \
             lease_until = NULL, changed_at = clock_timestamp() \
             WHERE state = 'active' AND (lease_node = $1 OR lease_until < clock_timestamp())",
            )
            .await?,
            &[&node],
        )
        .await?;
    Ok(usize::try_from(n).unwrap_or(usize::MAX))
}

/// Messages per state, and how many are quarantined.
pub(super) async fn counts(pool: &Pool) -> Result<(Vec<(String, usize)>, usize), DbError> {
    let client = connection(pool).await?;
    let rows = client
        .query(
            &prepared(
                &client,
                "SELECT state, count(*) FROM queue_message GROUP BY state",
            )
            .await?,
            &[],
        )
        .await?;
    let by_state = rows
        .into_iter()
        .map(|r| {
            let n: i64 = r.get(1);
            (r.get(0), usize::try_from(n).unwrap_or(0))
        })
        .collect();
    let corrupt: i64 = client
        .query_one(
            &prepared(&client, "SELECT count(*) FROM queue_quarantine").await?,
            &[],
        )
        .await?
        .get(0);
    Ok((by_state, usize::try_from(corrupt).unwrap_or(0)))
}

/// Writes a row and removes it in one committed transaction.
pub(super) async fn probe(pool: &Pool, node: &str) -> Result<(), DbError> {
    let mut client = connection(pool).await?;
    let tx = client.transaction().await?;
    tx.execute(
        "INSERT INTO queue_probe (node, at) VALUES ($1, clock_timestamp()) \
         ON CONFLICT (node) DO UPDATE SET at = excluded.at",
        &[&node],
    )
    .await?;
    tx.execute("DELETE FROM queue_probe WHERE node = $1", &[&node])
        .await?;
    tx.commit().await?;
    Ok(())
}

/// Runs until the runtime stops: every third of `lease`, extends the leases `node` holds on the
/// messages in `held` (those this process knows it claimed).
pub(super) async fn renew_leases(
    pool: Pool,
    node: String,
    lease: Duration,
    held: Arc<Mutex<HashSet<String>>>,
) {
    let every = (lease / 3).max(Duration::from_millis(100));
    loop {
        tokio::time::sleep(every).await;
        let ids: Vec<String> = held
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .cloned()
            .collect();
        if ids.is_empty() {
            continue;
        }
        let renewed = async {
            let client = connection(&pool).await?;
            client
                .execute(
                    &prepared(
                        &client,
                        "UPDATE queue_message \
                     SET lease_until = clock_timestamp() + make_interval(secs => $2) \
                     WHERE state = 'active' AND lease_node = $1 AND id = ANY($3)",
                    )
                    .await?,
                    &[&node, &seconds(lease), &ids],
                )
                .await?;
            Ok::<(), DbError>(())
        };
        if let Err(error) = renewed.await {
            tracing::warn!(%error, node, "cannot renew queue leases");
        }
    }
}
