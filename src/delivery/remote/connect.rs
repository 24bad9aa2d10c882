//! Opening a connection to one target under a TLS policy, checking it, and saying why it
//! could not be used.

use super::{RemoteDelivery, Target, TargetError};
use crate::smtp::client::{ClientError, ClientSettings, Connection, TlsMode};
use crate::tls::policy::{TlsFailure, TlsPolicy};

impl RemoteDelivery {
    pub(super) fn describe(&self, target: &Target, e: &TargetError) -> String {
        match e {
            TargetError::Tls(f) => {
                let [a, b, c] = f.enhanced();
                tracing::warn!(relay = %target.addr, name = %target.name, reason = %f, "TLS policy not met; nothing sent");
                self.telemetry
                    .metrics
                    .tls_failure(crate::telemetry::metrics::Direction::Outbound, &f.failure);
                format!("451 {a}.{b}.{c} {f} ({} [{}])", target.name, target.addr)
            }
            TargetError::Client(e) => {
                tracing::warn!(relay = %target.addr, name = %target.name, error = %e, "connection failed");
                format!("{} [{}]: {e}", target.name, target.addr)
            }
        }
    }

    /// Opens a connection under `policy` and checks it. Opportunistic (and audit-mode) delivery
    /// retries in plaintext when the handshake fails, like Postfix `may`; required and above
    /// never do: a missing STARTTLS or a failed check ends the attempt before MAIL FROM.
    /// Each session that gets as far as TLS is counted for TLS-RPT under `report`.
    pub(super) async fn open(
        &self,
        policy: &TlsPolicy,
        target: &Target,
        report: Option<&crate::report::tlsrpt::Policy>,
    ) -> Result<Connection, TargetError> {
        let settings = ClientSettings {
            tls: policy.client_config().clone(),
            ..self.settings.clone()
        };
        let conn = if policy.allows_plaintext() {
            match Connection::open(target.addr, &target.name, &settings, TlsMode::Opportunistic)
                .await
            {
                Err(ClientError::Tls(reason)) => {
                    tracing::warn!(relay = %target.addr, name = %target.name, %reason,
                        "STARTTLS failed; retrying this delivery without TLS (opportunistic)");
                    self.report_session(report, target, Some(&reason));
                    let plain =
                        Connection::open(target.addr, &target.name, &settings, TlsMode::Plaintext)
                            .await
                            .map_err(TargetError::Client)?;
                    return self.authorize(policy, plain).await;
                }
                other => other,
            }
            .map_err(TargetError::Client)?
        } else {
            match Connection::open(target.addr, &target.name, &settings, TlsMode::Required).await {
                Ok(c) => c,
                Err(ClientError::NoStartTls) => {
                    self.report_session(report, target, Some(&TlsFailure::NoStartTls));
                    return Err(TargetError::Tls(policy.failure(TlsFailure::NoStartTls)));
                }
                Err(ClientError::Tls(reason)) => {
                    self.report_session(report, target, Some(&reason));
                    return Err(TargetError::Tls(policy.failure(reason)));
                }
                Err(e) => return Err(TargetError::Client(e)),
            }
        };
        let conn = self.authorize(policy, conn).await;
        match &conn {
            Ok(c) => self.report_opened(report, target, c),
            Err(TargetError::Tls(f)) => self.report_session(report, target, Some(&f.failure)),
            Err(TargetError::Client(_)) => {}
        }
        conn
    }

    /// The policy check of an open connection; audit mode logs a failure and goes on.
    async fn authorize(
        &self,
        policy: &TlsPolicy,
        mut conn: Connection,
    ) -> Result<Connection, TargetError> {
        let peer = conn.peer();
        match conn.authorize(policy) {
            Ok(permit) => {
                if let Some(failure) = permit.overlooked() {
                    tracing::warn!(connector = policy.connector().unwrap_or(""), relay = %peer,
                        reason = %failure, "audit mode: delivering although the TLS policy is not met");
                }
                Ok(conn)
            }
            Err(failure) => {
                conn.quit().await;
                Err(TargetError::Tls(failure))
            }
        }
    }
}
