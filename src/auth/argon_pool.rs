//! Where password checks run: on a fixed pair of threads kept for them. An argon2 check fills
//! 19 MiB (the default cost), so checks run wherever they were called (up to the runtime's 512
//! blocking threads) would let a flood of logins claim gigabytes at once, and glibc would keep
//! what each thread freed in its arena. Here at most two checks hold that memory, whatever the
//! number of clients; the others wait their turn (argon2 is CPU-bound anyway).

use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex, OnceLock};

use argon2::password_hash::{PasswordHash, PasswordVerifier};
use argon2::Argon2;
use zeroize::Zeroizing;

/// Checks running at once; more wait their turn (argon2 is CPU-bound anyway).
const THREADS: usize = 2;

struct Job {
    hash: String,
    password: Zeroizing<String>,
    reply: mpsc::SyncSender<bool>,
}

fn workers() -> &'static Mutex<Option<Sender<Job>>> {
    static QUEUE: OnceLock<Mutex<Option<Sender<Job>>>> = OnceLock::new();
    QUEUE.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        let mut started = 0;
        for i in 0..THREADS {
            let rx = rx.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("password-check-{i}"))
                .spawn(move || work(&rx));
            if spawned.is_ok() {
                started += 1;
            }
        }
        Mutex::new((started > 0).then_some(tx))
    })
}

fn work(rx: &Mutex<Receiver<Job>>) {
    loop {
        let job = match rx.lock() {
            Ok(rx) => rx.recv(),
            Err(_) => return,
        };
        let Ok(job) = job else { return };
        let _ = job.reply.send(compute(&job.hash, &job.password));
    }
}

fn compute(hash: &str, password: &str) -> bool {
    PasswordHash::new(hash).is_ok_and(|parsed| {
        Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok()
    })
}

/// Whether `password` matches the PHC `hash`. Blocks the calling thread until a checker thread
/// is free and done (call it off the async reactor); checks on the calling thread if the
/// checker threads could not be started.
pub fn verify(hash: &str, password: &str) -> bool {
    let (reply, answer) = mpsc::sync_channel(1);
    let job = Job {
        hash: hash.to_string(),
        password: Zeroizing::new(password.to_string()),
        reply,
    };
    let sent = match workers().lock() {
        Ok(queue) => queue.as_ref().map(|q| q.send(job).is_ok()),
        Err(_) => None,
    };
    match sent {
        Some(true) => answer.recv().unwrap_or(false),
        _ => compute(hash, password),
    }
}
