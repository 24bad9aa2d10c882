//! The inbound checks of a message from outside: SPF (RFC 7208) of MAIL FROM (or HELO for the
//! null sender), DKIM (RFC 6376), ARC (RFC 8617) and DMARC (RFC 7489) with alignment, into one
//! [`AuthOutcome`]: the results, the Authentication-Results field and what the DMARC policy
//! asks for.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

use hickory_resolver::config::{ResolverConfig, ResolverOpts};
use mail_auth::common::headers::HeaderWriter;
use mail_auth::dmarc::verify::DmarcParameters;
use mail_auth::dmarc::Policy;
use mail_auth::spf::verify::SpfParameters;
use mail_auth::{
    AuthenticatedMessage, AuthenticationResults, DkimResult, DmarcResult, MessageAuthenticator,
    Parameters, SpfResult,
};

use super::{AuthResult, StaticTxt};

/// What to do with mail from a domain whose DMARC check fails, overriding its published policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DmarcOverride {
    /// Deliver it (monitor only).
    None,
    /// Deliver it marked (quarantine).
    Quarantine,
    /// Refuse it with 550 5.7.1.
    Reject,
}

impl DmarcOverride {
    pub fn parse(text: &str) -> Option<DmarcOverride> {
        match text {
            "none" => Some(DmarcOverride::None),
            "quarantine" => Some(DmarcOverride::Quarantine),
            "reject" => Some(DmarcOverride::Reject),
            _ => None,
        }
    }
}

/// How long the checks of one message may take by default: a few DNS round trips each bounded
/// by the resolver's own timeout (2 s, 2 attempts), and far below the 10 minutes a client waits
/// for the reply to DATA (RFC 5321 §4.5.3.2.6).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// How the checks are run and their verdict applied.
#[derive(Debug, Clone)]
pub struct VerifySettings {
    /// Apply the published DMARC policy (`p=reject` → 550, `p=quarantine` → marked).
    pub enforce: bool,
    /// Lowercase From: domain → what to do on a DMARC failure, whatever it publishes.
    pub overrides: BTreeMap<String, DmarcOverride>,
    /// Records answered without DNS.
    pub static_txt: StaticTxt,
    /// The longest the checks of one message may take; then the message is accepted with
    /// temperror results.
    pub timeout: Duration,
}

impl Default for VerifySettings {
    fn default() -> Self {
        VerifySettings {
            enforce: true,
            overrides: BTreeMap::new(),
            static_txt: StaticTxt::default(),
            timeout: DEFAULT_TIMEOUT,
        }
    }
}

/// What becomes of the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    Accept,
    /// Delivered with the quarantine mark.
    Quarantine,
    /// Refused with 550 5.7.1.
    Reject,
}

/// The checks' results for one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthOutcome {
    pub spf: AuthResult,
    pub dkim: AuthResult,
    pub arc: AuthResult,
    pub dmarc: AuthResult,
    /// The RFC 5322 From: domain DMARC was evaluated for.
    pub from_domain: String,
    /// The Authentication-Results field, with its CRLF.
    pub header: String,
    pub disposition: Disposition,
}

/// The facts of the SMTP transaction the checks need.
#[derive(Debug, Clone, Copy)]
pub struct Inbound<'a> {
    pub ip: IpAddr,
    pub helo: &'a str,
    /// Empty for the null sender.
    pub mail_from: &'a str,
    /// The message as it arrived (without our own trace fields).
    pub message: &'a [u8],
}

/// Runs the checks with mail-auth, over the configured resolver.
pub struct Verifier {
    hostname: String,
    authenticator: MessageAuthenticator,
    settings: VerifySettings,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("hostname", &self.hostname)
            .finish_non_exhaustive()
    }
}

impl Verifier {
    /// `resolver`: the server's (same nameservers as `[dns]`); None: only the static records
    /// answer, every other lookup fails.
    pub fn new(
        hostname: &str,
        resolver: Option<&crate::dns::Resolver>,
        settings: VerifySettings,
    ) -> Result<Verifier, String> {
        let hickory = match resolver {
            Some(r) => r.hickory(),
            None => hickory_resolver::TokioResolver::builder_with_config(
                ResolverConfig::from_parts(None, Vec::new(), Vec::new()),
                hickory_resolver::net::runtime::TokioRuntimeProvider::default(),
            )
            .with_options(ResolverOpts::default())
            .build()
            .map_err(|e| format!("cannot build a resolver: {e}"))?,
        };
        Ok(Verifier {
            hostname: hostname.to_string(),
            authenticator: MessageAuthenticator(hickory),
            settings,
        })
    }

    /// [`Verifier::verify`] from blocking code (the cleanup stage runs off the reactor).
    pub fn verify_blocking(&self, inbound: &Inbound<'_>) -> AuthOutcome {
        use tokio::runtime::{Handle, RuntimeFlavor};
        match Handle::try_current() {
            Ok(h) if h.runtime_flavor() == RuntimeFlavor::MultiThread => {
                tokio::task::block_in_place(|| h.block_on(self.verify(inbound)))
            }
            // No runtime here, or one that cannot block: a runtime of its own, on its own thread.
            _ => std::thread::scope(|s| {
                s.spawn(|| {
                    match tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                    {
                        Ok(rt) => rt.block_on(self.verify(inbound)),
                        Err(e) => {
                            tracing::error!(error = %e, "no runtime for the sender checks");
                            self.unparsable(inbound)
                        }
                    }
                })
                .join()
                .unwrap_or_else(|_| self.unparsable(inbound))
            }),
        }
    }

    /// The outcome for a message whose header section cannot be read.
    fn unparsable(&self, inbound: &Inbound<'_>) -> AuthOutcome {
        let header = format!(
            "Authentication-Results: {};\r\n\tdkim=permerror (unreadable message) smtp.remote-ip={}\r\n",
            self.hostname, inbound.ip
        );
        AuthOutcome {
            spf: AuthResult::None,
            dkim: AuthResult::PermError,
            arc: AuthResult::None,
            dmarc: AuthResult::None,
            from_domain: String::new(),
            header,
            disposition: Disposition::Accept,
        }
    }

    /// Runs SPF, DKIM, ARC and DMARC on the message, within the configured time: when DNS does
    /// not answer in time the results are temperror and the message is accepted (RFC 7489 §6.6.3:
    /// a temporary failure is never a reason to refuse mail under the policy).
    pub async fn verify(&self, inbound: &Inbound<'_>) -> AuthOutcome {
        match tokio::time::timeout(self.settings.timeout, self.run_checks(inbound)).await {
            Ok(outcome) => outcome,
            Err(_) => {
                tracing::warn!(client = %inbound.ip, from = %inbound.mail_from,
                    timeout = ?self.settings.timeout, "sender checks timed out waiting for DNS");
                self.timed_out(inbound)
            }
        }
    }

    /// The outcome when the checks ran out of time: every method temperror, accepted.
    fn timed_out(&self, inbound: &Inbound<'_>) -> AuthOutcome {
        let from_domain = AuthenticatedMessage::parse(inbound.message)
            .and_then(|m| {
                m.from()
                    .rsplit_once('@')
                    .map(|(_, d)| d.to_ascii_lowercase())
            })
            .unwrap_or_default();
        let header = format!(
            "Authentication-Results: {};\r\n\tspf=temperror (DNS did not answer within {}s);\r\n\
             \tdkim=temperror;\r\n\tarc=temperror;\r\n\tdmarc=temperror\r\n",
            self.hostname,
            self.settings.timeout.as_secs_f32()
        );
        AuthOutcome {
            spf: AuthResult::TempError,
            dkim: AuthResult::TempError,
            arc: AuthResult::TempError,
            dmarc: AuthResult::TempError,
            from_domain,
            header,
            disposition: Disposition::Accept,
        }
    }

    async fn run_checks(&self, inbound: &Inbound<'_>) -> AuthOutcome {
        let Some(message) = AuthenticatedMessage::parse(inbound.message) else {
            return self.unparsable(inbound);
        };
        let txt = &self.settings.static_txt;
        let auth = &self.authenticator;
        let dkim = auth
            .verify_dkim(Parameters::new(&message).with_txt_cache(txt))
            .await;
        let arc = auth
            .verify_arc(Parameters::new(&message).with_txt_cache(txt))
            .await;
        let helo = inbound.helo;
        let spf_params = match inbound.mail_from.is_empty() {
            true => SpfParameters::verify_ehlo(inbound.ip, helo, &self.hostname),
            false => {
                SpfParameters::verify_mail_from(inbound.ip, helo, &self.hostname, inbound.mail_from)
            }
        };
        let spf = auth
            .verify_spf(Parameters::new(spf_params).with_txt_cache(txt))
            .await;
        let mail_from_domain = inbound.mail_from.rsplit_once('@').map_or(helo, |(_, d)| d);
        let dmarc = auth
            .verify_dmarc(
                Parameters::new(DmarcParameters::new(
                    &message,
                    &dkim,
                    mail_from_domain,
                    &spf,
                ))
                .with_txt_cache(txt),
            )
            .await;
        let header = AuthenticationResults::new(&self.hostname)
            .with_dkim_results(&dkim, message.from())
            .with_spf_mailfrom_result(&spf, inbound.ip, inbound.mail_from, helo)
            .with_arc_result(&arc, inbound.ip)
            .with_dmarc_result(&dmarc)
            .to_header();
        let dmarc_result = dmarc_result(&dmarc.result());
        let from_domain = dmarc.domain().to_ascii_lowercase();
        let disposition = self.disposition(dmarc_result, dmarc.policy(), &from_domain);
        AuthOutcome {
            spf: spf_result(spf.result()),
            dkim: best_dkim(dkim.iter().map(|d| d.result())),
            arc: dkim_result(arc.result()),
            dmarc: dmarc_result,
            from_domain,
            header,
            disposition,
        }
    }

    /// A DMARC failure under the domain's override, else under its policy when enforcing. The
    /// policy mail-auth reports is already one level milder for a record in test mode (`t=y`,
    /// RFC 9989 §4.7, the successor of `pct=0`): reject → quarantine, quarantine → none.
    fn disposition(&self, dmarc: AuthResult, policy: Policy, domain: &str) -> Disposition {
        if dmarc != AuthResult::Fail {
            return Disposition::Accept;
        }
        match self.settings.overrides.get(domain) {
            Some(DmarcOverride::None) => Disposition::Accept,
            Some(DmarcOverride::Quarantine) => Disposition::Quarantine,
            Some(DmarcOverride::Reject) => Disposition::Reject,
            None if !self.settings.enforce => Disposition::Accept,
            None => match policy {
                Policy::Reject => Disposition::Reject,
                Policy::Quarantine => Disposition::Quarantine,
                Policy::None | Policy::Unspecified => Disposition::Accept,
            },
        }
    }
}

fn spf_result(r: SpfResult) -> AuthResult {
    match r {
        SpfResult::Pass => AuthResult::Pass,
        SpfResult::Fail => AuthResult::Fail,
        SpfResult::SoftFail => AuthResult::SoftFail,
        SpfResult::Neutral => AuthResult::Neutral,
        SpfResult::TempError => AuthResult::TempError,
        SpfResult::PermError => AuthResult::PermError,
        SpfResult::None => AuthResult::None,
    }
}

fn dkim_result(r: &DkimResult) -> AuthResult {
    match r {
        DkimResult::Pass => AuthResult::Pass,
        DkimResult::Neutral(_) => AuthResult::Neutral,
        DkimResult::Fail(_) => AuthResult::Fail,
        DkimResult::PermError(_) => AuthResult::PermError,
        DkimResult::TempError(_) => AuthResult::TempError,
        DkimResult::None => AuthResult::None,
    }
}

/// One result for all signatures: pass when one passes, else the first other result.
fn best_dkim<'a>(results: impl Iterator<Item = &'a DkimResult>) -> AuthResult {
    let all: Vec<AuthResult> = results.map(dkim_result).collect();
    if all.contains(&AuthResult::Pass) {
        return AuthResult::Pass;
    }
    all.into_iter()
        .find(|r| *r != AuthResult::None)
        .unwrap_or(AuthResult::None)
}

fn dmarc_result(r: &DmarcResult) -> AuthResult {
    match r {
        DmarcResult::Pass => AuthResult::Pass,
        DmarcResult::Fail(_) => AuthResult::Fail,
        DmarcResult::TempError(_) => AuthResult::TempError,
        DmarcResult::PermError(_) => AuthResult::PermError,
        DmarcResult::None => AuthResult::None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sender_auth::dkim_sign::{generate_pem, KeyAlgorithm};
    use crate::sender_auth::{DkimKey, Signer};

    /// A verifier answering only from static records (no DNS at all).
    fn verifier(records: &[(&str, String)], overrides: &[(&str, DmarcOverride)]) -> Verifier {
        let records: Vec<(String, String)> = records
            .iter()
            .map(|(n, r)| (n.to_string(), r.clone()))
            .collect();
        let settings = VerifySettings {
            enforce: true,
            overrides: overrides.iter().map(|(d, o)| (d.to_string(), *o)).collect(),
            static_txt: StaticTxt::new(records.iter().map(|(a, b)| (a, b)), true).unwrap(),
            timeout: DEFAULT_TIMEOUT,
        };
        Verifier::new("mx.b.test", None, settings).unwrap()
    }

    const MESSAGE: &[u8] =
        b"From: <alice@a.test>\r\nTo: <bob@b.test>\r\nSubject: hi\r\n\r\nHello.\r\n";

    #[test]
    fn ed25519_signature_passes_and_an_altered_body_fails() {
        let key =
            DkimKey::from_pem(generate_pem(KeyAlgorithm::Ed25519).unwrap().as_bytes()).unwrap();
        let record = key.dns_record();
        let signed = [
            Signer::new("a.test", "ed", key, &[])
                .sign(MESSAGE)
                .unwrap()
                .as_bytes(),
            MESSAGE,
        ]
        .concat();
        let v = verifier(
            &[
                ("ed._domainkey.a.test", record),
                ("_dmarc.a.test", "v=DMARC1; p=reject".into()),
            ],
            &[],
        );
        fn inbound(message: &[u8]) -> Inbound<'_> {
            Inbound {
                ip: "192.0.2.1".parse().unwrap(),
                helo: "client.a.test",
                mail_from: "alice@a.test",
                message,
            }
        }
        let out = v.verify_blocking(&inbound(&signed));
        assert_eq!((out.dkim, out.dmarc), (AuthResult::Pass, AuthResult::Pass));
        assert_eq!(out.spf, AuthResult::None, "no SPF record in the table");
        assert_eq!(out.disposition, Disposition::Accept);
        assert!(
            out.header.contains("dkim=pass header.d=a.test header.s=ed"),
            "{}",
            out.header
        );

        // mail-auth reports a body that no longer matches its hash as neutral ("body hash did
        // not verify"), a changed signed header field as fail; DMARC fails either way.
        let text = String::from_utf8(signed.clone()).unwrap();
        for (altered, dkim) in [
            (text.replace("Hello.", "Hallo."), AuthResult::Neutral),
            (text.replace("Subject: hi", "Subject: hI"), AuthResult::Fail),
        ] {
            let out = v.verify_blocking(&inbound(altered.as_bytes()));
            assert_eq!(
                (out.dkim, out.dmarc),
                (dkim, AuthResult::Fail),
                "{}",
                out.header
            );
            assert_eq!(out.disposition, Disposition::Reject, "p=reject");
        }

        let v = verifier(
            &[("_dmarc.a.test", "v=DMARC1; p=reject".into())],
            &[("a.test", DmarcOverride::Quarantine)],
        );
        let out = v.verify_blocking(&inbound(MESSAGE));
        assert_eq!(out.dmarc, AuthResult::Fail);
        assert_eq!(
            out.disposition,
            Disposition::Quarantine,
            "the override wins"
        );
    }

    #[test]
    fn test_mode_applies_the_next_milder_policy() {
        let inbound = Inbound {
            ip: "192.0.2.1".parse().unwrap(),
            helo: "client.a.test",
            mail_from: "alice@a.test",
            message: MESSAGE,
        };
        for (record, want) in [
            ("v=DMARC1; p=reject", Disposition::Reject),
            ("v=DMARC1; p=reject; t=y", Disposition::Quarantine),
            ("v=DMARC1; p=quarantine", Disposition::Quarantine),
            ("v=DMARC1; p=quarantine; t=y", Disposition::Accept),
            ("v=DMARC1; p=reject; t=n", Disposition::Reject),
        ] {
            let v = verifier(&[("_dmarc.a.test", record.into())], &[]);
            let out = v.verify_blocking(&inbound);
            assert_eq!(out.dmarc, AuthResult::Fail, "{record}: {}", out.header);
            assert_eq!(out.disposition, want, "{record}");
        }
    }
}
