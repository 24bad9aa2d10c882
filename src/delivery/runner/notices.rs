//! The runner's notices to the sender: which are owed after an attempt, and queueing them
//! durably. A notice that cannot be queued stays owed in the envelope for the next pass.

use std::sync::Arc;

use super::Runner;
use crate::mail::new_queue_id;
use crate::queue::{dsn, Envelope, NoticeAction, Recipient};
use crate::telemetry::TraceEvent;

impl Runner {
    /// Queues the failure and success notices owed by `env` and, when due, its one delay
    /// notice. What was queued is marked done in `env`; what was not stays owed.
    pub(super) async fn queue_notices(
        &self,
        env: &mut Envelope,
        message: &Arc<Vec<u8>>,
        now: i64,
        finished: bool,
    ) {
        for (kind, failures) in [(dsn::Kind::Failure, true), (dsn::Kind::Success, false)] {
            let due: Vec<usize> = (0..env.recipients.len())
                .filter(|&i| {
                    env.recipients[i]
                        .notice_due
                        .is_some_and(|a| (a == NoticeAction::Failed) == failures)
                })
                .collect();
            if due.is_empty() {
                continue;
            }
            let reported: Vec<dsn::Reported> =
                due.iter().map(|&i| reported(&env.recipients[i])).collect();
            if self.send_notice(kind, env, message, &reported).await {
                for i in due {
                    env.recipients[i].notice_due = None;
                }
            }
        }
        let waited = now.saturating_sub(env.received_at);
        let due = self
            .config
            .get()
            .queue
            .delay_warning
            .is_some_and(|d| waited >= d.as_secs() as i64);
        if !finished && !env.delay_notified && due {
            let pending: Vec<dsn::Reported> = env
                .pending()
                .filter(|r| r.wants_delay())
                .map(reported)
                .collect();
            // Without anyone to tell, there is nothing to send now or later.
            env.delay_notified = pending.is_empty()
                || self
                    .send_notice(dsn::Kind::Delay, env, message, &pending)
                    .await;
        }
    }

    /// Queues a DSN to the message's sender, from the null sender; true once it is durable.
    async fn send_notice(
        &self,
        kind: dsn::Kind,
        env: &Envelope,
        message: &[u8],
        recipients: &[dsn::Reported],
    ) -> bool {
        let id = new_queue_id();
        let now = chrono::Utc::now();
        let hostname = self.config.get().hostname.clone();
        let notice = dsn::build(kind, &hostname, env, recipients, message, &id, now);
        let mut envelope = Envelope::new(
            id.clone(),
            "",
            vec![env.mail_from.clone()],
            hostname,
            "localhost",
            now.timestamp(),
        );
        // RFC 8689 §5: a notice about a REQUIRETLS message travels under REQUIRETLS too (and
        // `dsn::build` returns only the header section of it).
        envelope.requiretls = env.requiretls;
        let queue = self.queue.clone();
        match tokio::task::spawn_blocking(move || queue.enqueue(&envelope, &notice)).await {
            Ok(Ok(())) => {
                tracing::info!(queue_id = %env.id, notice_id = %id, to = %env.mail_from, ?kind, "delivery status notification queued");
                let kind = format!("{kind:?}").to_ascii_lowercase();
                self.telemetry.metrics.notification(&kind);
                self.telemetry.trace(
                    &env.id,
                    TraceEvent::Notification {
                        kind,
                        notice_id: id.clone(),
                        to: env.mail_from.clone(),
                    },
                );
                self.wake.queued([id.clone()]);
                true
            }
            Ok(Err(e)) => {
                tracing::error!(queue_id = %env.id, error = %e, ?kind, "cannot queue the delivery status notification; will try again");
                false
            }
            Err(e) => {
                tracing::error!(queue_id = %env.id, error = %e, "notification task panicked");
                false
            }
        }
    }
}

fn reported(r: &Recipient) -> dsn::Reported {
    dsn::Reported {
        address: r.address.clone(),
        diagnostic: r.last_reply.clone().unwrap_or_default(),
        action: r.notice_due,
        orcpt: r.orcpt.clone(),
    }
}
