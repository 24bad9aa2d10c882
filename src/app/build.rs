//! Builds the parts of a server that a configuration determines (TLS, connectors, rules,
//! encryption, listeners' session settings) — at start and again on every reload.

use std::sync::Arc;

use anyhow::Context;

use crate::auth::{SenderLogins, Users};
use crate::cleanup::Cleanup;
use crate::config::{Config, ListenerProtocol, SenderLoginMismatch};
use crate::delivery::remote::RemoteDelivery;
use crate::dns::Resolver;
use crate::net::limits::ConnectionLimits;
use crate::queue::QueueStore;
use crate::smtp::client::ClientSettings;
use crate::smtp::server::inbound::{ConnectorPolicy, InboundConnectors};
use crate::smtp::server::listener::ServerContext;
use crate::smtp::server::policy::LocalPolicy;
use crate::smtp::server::session::SessionConfig;
use crate::telemetry::Telemetry;

/// What every version of the configuration shares: the queue, the runner's wake-up, the
/// telemetry and the connection counts.
pub(crate) struct Shared {
    pub queue: Arc<dyn QueueStore>,
    pub wake: Arc<crate::queue::Wake>,
    pub telemetry: Arc<Telemetry>,
    pub limits: Arc<ConnectionLimits>,
    pub in_flight: Arc<crate::queue::InFlight>,
    pub retransmissions: Arc<crate::queue::retransmit::Retransmissions>,
    /// The TLS-RPT journal; sessions are counted while `[tls_report] enabled`.
    pub tls_report: Arc<dyn crate::report::tlsrpt::SessionJournal>,
}

/// The configuration-dependent parts.
pub(crate) struct Parts {
    /// One per SMTP listener of `config.listeners`, same order.
    pub contexts: Vec<Arc<ServerContext>>,
    pub cleanup: Arc<Cleanup>,
    pub remote: Arc<RemoteDelivery>,
}

/// Remote delivery as the configuration sets it up: resolver, connectors, MTA-STS and DANE
/// (`sealpost tls-check --domain` asks it which policy applies, as the server would).
pub(crate) fn remote_delivery(
    config: &Config,
    telemetry: Arc<crate::telemetry::Telemetry>,
) -> anyhow::Result<RemoteDelivery> {
    let resolver = match Resolver::new(&config.nameservers) {
        Ok(r) => Some(r),
        Err(e) => {
            tracing::warn!(error = %e, "no DNS resolver: only static routes and local mailboxes can be delivered");
            None
        }
    };
    let client = ClientSettings {
        helo_name: config.hostname.clone(),
        timeout: config.delivery.timeout,
        tls: crate::tls::opportunistic_client_config(),
    };
    Ok(RemoteDelivery::new(
        client,
        resolver,
        config.delivery.smtp_port,
        config.delivery.connection_reuse_time,
    )
    .with_connectors(config)?
    .with_telemetry(telemetry))
}

/// DKIM signing of our mail and, with `[sender_auth] verify`, the checks of mail from outside
/// over the `[dns]` nameservers (or only the static records when no resolver can be built).
fn sender_auth(config: &Config) -> anyhow::Result<crate::cleanup::authenticate::SenderAuth> {
    tracing::info!("{}", sender_checks_summary(config));
    let verifier = match config.sender_auth.verify {
        false => None,
        true => {
            let resolver = Resolver::new(&config.nameservers)
                .inspect_err(|e| tracing::warn!(error = %e, "no DNS resolver for the sender checks: only [sender_auth.static_txt] answers"))
                .ok();
            let verifier = crate::sender_auth::Verifier::new(
                &config.hostname,
                resolver.as_ref(),
                config.sender_auth.settings.clone(),
            )
            .map_err(|e| anyhow::anyhow!(e))
            .context("sender_auth")?;
            Some(Arc::new(verifier))
        }
    };
    Ok(crate::cleanup::authenticate::SenderAuth {
        verifier,
        signers: config.dkim.clone(),
        relay_networks: config.relay_networks.clone(),
        local_domains: config.local_domains.clone(),
    })
}

/// One line on the checks of mail from outside: on or off, what answers their DNS questions and
/// how long they may wait (for the log at start and `check-config`).
pub fn sender_checks_summary(config: &Config) -> String {
    let auth = &config.sender_auth;
    if !auth.verify {
        return "sender checks: off ([sender_auth] verify = false)".to_string();
    }
    let settings = &auth.settings;
    let dns = match settings.static_txt.static_only() {
        true => "no DNS, [sender_auth.static_txt] only".to_string(),
        false => format!(
            "DNS {}",
            crate::dns::describe_nameservers(&config.nameservers)
        ),
    };
    format!(
        "sender checks: on for mail from outside (SPF, DKIM, ARC, DMARC; DMARC policy {}; {dns}; \
         at most {}s per message)",
        if settings.enforce {
            "enforced"
        } else {
            "not enforced"
        },
        settings.timeout.as_secs_f32()
    )
}

pub(crate) fn build(config: &Config, shared: &Shared) -> anyhow::Result<Parts> {
    let inbound = Arc::new(InboundConnectors::from_config(config));
    let tls = match &config.tls {
        Some(files) => {
            let ask = inbound.wants_client_certificates();
            Some(crate::tls::server_config(
                &files.key,
                files.min_version,
                ask,
                files.session_tickets,
            )?)
        }
        None => None,
    };
    let remote = Arc::new(
        remote_delivery(config, shared.telemetry.clone())?
            .with_tls_report(config.tls_report.enabled.then(|| shared.tls_report.clone())),
    );
    let mut cleanup = Cleanup::new(&config.hostname, shared.queue.clone(), shared.wake.clone())
        .with_rules(config.rules.clone(), config.local_domains.clone())
        .with_telemetry(shared.telemetry.clone())
        .with_retransmissions(shared.retransmissions.clone())
        .with_always_add_missing_headers(config.always_add_missing_headers)
        .with_sender_auth(sender_auth(config)?);
    if let Some(dir) = &config.smime_certificate_dir {
        cleanup = cleanup.with_smime(Arc::new(crate::cleanup::smime::DirectorySmime::new(
            dir.clone(),
        )));
    }
    if let Some(signing) = &config.smime_signing {
        cleanup = cleanup.with_signer(Arc::new(crate::cleanup::sign::DirectorySigner::new(
            signing.keys.clone(),
            shared.telemetry.clone(),
        )));
    }
    if let Some(dir) = &config.rms_tenant_key_dir {
        let keys = crate::crypto::rms::TenantKeys::load_dir_with(dir, config.pkcs11.as_ref())
            .map_err(|e| anyhow::anyhow!("{}: {e}", dir.display()))
            .context("rms.tenant_key_dir")?;
        let url = config.rms_licensing.as_ref().map(|l| l.url.clone());
        cleanup = cleanup.with_rms(Arc::new(
            crate::cleanup::rms::TenantRms::new(keys, config.rms_templates.clone())
                .with_licensing_url(url),
        ));
    }
    let cleanup = Arc::new(cleanup);
    let policy: Arc<dyn crate::smtp::server::policy::Policy> = Arc::new(ConnectorPolicy {
        local: LocalPolicy {
            local_domains: config.local_domains.clone(),
            mailboxes: config.mailboxes.iter().cloned().collect(),
            senders: match config.sender_login_mismatch {
                SenderLoginMismatch::Reject => SenderLogins::Owned(config.user_addresses.clone()),
                SenderLoginMismatch::Allow => SenderLogins::Any,
            },
        },
        inbound,
    });
    let users = Arc::new(Users::new(config.users.clone()));
    // One context per listener: submission listeners offer AUTH and require it for MAIL.
    let contexts = config
        .listeners
        .iter()
        .filter(|l| !l.protocol.is_imap())
        .map(|l| {
            Arc::new(ServerContext {
                session: Arc::new(SessionConfig {
                    hostname: config.hostname.clone(),
                    max_message_size: config.limits.max_message_size,
                    max_recipients: config.limits.max_recipients,
                    starttls_available: tls.is_some()
                        && l.protocol != ListenerProtocol::Submissions,
                    bare_newline: config.limits.bare_newline,
                    auth: l.protocol != ListenerProtocol::Smtp,
                }),
                policy: policy.clone(),
                relay_networks: config.relay_networks.clone(),
                tls: tls.clone(),
                cleanup: cleanup.clone(),
                command_timeout: config.limits.command_timeout,
                data_timeout: config.limits.data_timeout,
                implicit_tls: l.protocol == ListenerProtocol::Submissions,
                users: users.clone(),
                limits: shared.limits.clone(),
                in_flight: shared.in_flight.clone(),
                listener_name: match l.protocol {
                    ListenerProtocol::Smtp => "smtp",
                    ListenerProtocol::Submission => "submission",
                    ListenerProtocol::Submissions => "submissions",
                    ListenerProtocol::Imap | ListenerProtocol::Imaps => "imap",
                },
                telemetry: shared.telemetry.clone(),
            })
        })
        .collect();
    Ok(Parts {
        contexts,
        cleanup,
        remote,
    })
}
