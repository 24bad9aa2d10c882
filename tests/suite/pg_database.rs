//! `Database::run` against a real PostgreSQL from every kind of caller the server has: a plain
//! thread, a blocking-pool thread, and an async task of another runtime (multi-thread and
//! current-thread), with more work in one call than a task's cooperative budget allows, and many
//! callers at once. Each caller must get its own answers, within a bound, never hang or spin.

use crate::support;

use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

use sealpost::pg::{Database, DbError};
use support::postgres as pg;

/// One call that runs `statements` queries on one connection; returns the sum of their answers.
fn sum_of_queries(db: &Database, first: i32, statements: i32) -> Result<i64, DbError> {
    db.run(|pool| async move {
        let client = pool.get().await.map_err(|e| DbError::Pool(e.to_string()))?;
        let mut sum = 0i64;
        for i in first..first + statements {
            let row = client
                .query_one("SELECT $1::int8 * 2", &[&i64::from(i)])
                .await
                .map_err(|e| DbError::Pool(e.to_string()))?;
            sum += row.get::<_, i64>(0);
        }
        Ok(sum)
    })
}

fn expected(first: i32, statements: i32) -> i64 {
    (first..first + statements).map(|i| 2 * i64::from(i)).sum()
}

/// Runs `f` on a thread of its own and fails the test if it does not finish within 60 s.
fn within_a_minute(what: &str, f: impl FnOnce() + Send + 'static) {
    let (done, finished) = mpsc::channel();
    std::thread::spawn(move || {
        f();
        let _ = done.send(());
    });
    match finished.recv_timeout(Duration::from_secs(60)) {
        Ok(()) => {}
        Err(mpsc::RecvTimeoutError::Timeout) => panic!("{what}: no answer within 60 s"),
        Err(mpsc::RecvTimeoutError::Disconnected) => panic!("{what}: the caller panicked"),
    }
}

#[test]
fn run_answers_every_kind_of_caller_and_many_at_once() {
    let Some(cluster) = pg::shared() else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let database = cluster.create_database();
    let settings = cluster.settings(&database, &cluster.password_file(dir.path()));
    let db: Arc<Database> = Database::open(&settings).expect("open the database");

    let d = db.clone();
    within_a_minute("a plain thread", move || {
        assert_eq!(sum_of_queries(&d, 1, 300).unwrap(), expected(1, 300));
    });

    // An async task of a multi-thread runtime: 300 statements in one call are more polls of
    // database futures than a task's budget (128) allows before it must yield.
    let d = db.clone();
    within_a_minute("an async task (multi-thread runtime)", move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let task = tokio::spawn(async move {
                let mut sums = Vec::new();
                for round in 0..3 {
                    sums.push(sum_of_queries(&d, round * 1000, 300).unwrap());
                }
                sums
            });
            let sums = task.await.unwrap();
            for (round, sum) in sums.into_iter().enumerate() {
                assert_eq!(sum, expected(round as i32 * 1000, 300));
            }
        });
    });

    let d = db.clone();
    within_a_minute(
        "a current-thread runtime and its blocking pool",
        move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                assert_eq!(sum_of_queries(&d, 5, 200).unwrap(), expected(5, 200));
                let blocking = tokio::task::spawn_blocking(move || sum_of_queries(&d, 7, 200));
                assert_eq!(blocking.await.unwrap().unwrap(), expected(7, 200));
            });
        },
    );

    // Sixteen callers at once, more than the pool's connections: each gets its own answers.
    let d = db.clone();
    within_a_minute("sixteen threads at once", move || {
        std::thread::scope(|s| {
            for t in 0..16 {
                let d = &d;
                s.spawn(move || {
                    for round in 0..20 {
                        let first = t * 10_000 + round * 100;
                        assert_eq!(sum_of_queries(d, first, 10).unwrap(), expected(first, 10));
                    }
                });
            }
        });
    });
}

#[test]
fn run_gives_up_within_its_limit_when_the_work_never_ends() {
    let Some(cluster) = pg::shared() else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let database = cluster.create_database();
    let mut settings = cluster.settings(&database, &cluster.password_file(dir.path()));
    settings.connect_timeout = Duration::from_millis(500);
    settings.statement_timeout = Duration::from_millis(500);
    let db = Database::open(&settings).expect("open the database");
    let started = std::time::Instant::now();
    let result: Result<(), DbError> = db.run(|_| std::future::pending());
    assert!(matches!(result, Err(DbError::Timeout(_))), "{result:?}");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(5),
        "gave up after {took:?}, the limit being 1 s"
    );
}
