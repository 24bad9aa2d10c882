//! From sessions to reports: what is pending per domain, the RFC 8460 JSON of a report, and the
//! RFC 8460 §5.3 message that carries it gzipped.

use std::collections::BTreeMap;
use std::io::Write;

use mail_auth::report::tlsrpt as rfc;

use super::journal::day_start;
use super::{Failure, Policy, Session};

/// The sessions of one domain not reported yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    pub domain: String,
    /// The range covered, in seconds since the epoch: `start` ≤ t < `end`.
    pub start: i64,
    pub end: i64,
    pub policies: BTreeMap<Policy, Counts>,
}

/// The sessions under one policy.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counts {
    pub success: u64,
    pub failures: BTreeMap<Failure, u64>,
}

impl Counts {
    pub fn failed(&self) -> u64 {
        self.failures.values().sum()
    }
}

impl Pending {
    pub fn sessions(&self) -> (u64, u64) {
        self.policies
            .values()
            .fold((0, 0), |(s, f), c| (s + c.success, f + c.failed()))
    }
}

/// The sessions before `until` that `reported` (domain → reported up to) does not cover, by
/// domain. A domain never reported starts at the UTC day of its first session.
pub fn pending(
    sessions: &[Session],
    reported: &BTreeMap<String, i64>,
    until: i64,
) -> BTreeMap<String, Pending> {
    let mut out: BTreeMap<String, Pending> = BTreeMap::new();
    for s in sessions {
        let since = reported.get(&s.policy.domain).copied();
        if s.t >= until || since.is_some_and(|since| s.t < since) {
            continue;
        }
        let start = since.unwrap_or_else(|| day_start(s.t));
        add(&mut out, start, until, &s.policy, s.failure.as_ref(), 1);
    }
    out
}

/// Adds `n` sessions under `policy` (failed with `failure`, or met it) to the pending report
/// of the policy's domain, which starts no later than `start` and ends at `until`.
pub fn add(
    out: &mut BTreeMap<String, Pending>,
    start: i64,
    until: i64,
    policy: &Policy,
    failure: Option<&Failure>,
    n: u64,
) {
    let p = out.entry(policy.domain.clone()).or_insert_with(|| Pending {
        domain: policy.domain.clone(),
        start,
        end: until,
        policies: BTreeMap::new(),
    });
    p.start = p.start.min(start);
    let counts = p.policies.entry(policy.clone()).or_default();
    match failure {
        None => counts.success += n,
        Some(f) => *counts.failures.entry(f.clone()).or_default() += n,
    }
}

/// Who sends the reports.
#[derive(Debug, Clone)]
pub struct Submitter {
    /// `organization-name`.
    pub organization: String,
    /// The submitter in the subject and file name: the server's host name.
    pub hostname: String,
    /// `contact-info`, and the From of report messages.
    pub contact: String,
}

/// The report of `p` in RFC 8460 §4.4 form (as the field's types name it).
pub fn report(p: &Pending, submitter: &Submitter, report_id: &str) -> rfc::TlsReport {
    let count = |n: u64| u32::try_from(n).unwrap_or(u32::MAX);
    let policies = p
        .policies
        .iter()
        .map(|(policy, counts)| rfc::Policy {
            policy: rfc::PolicyDetails {
                policy_type: match policy.kind {
                    super::PolicyType::Tlsa => rfc::PolicyType::Tlsa,
                    super::PolicyType::Sts => rfc::PolicyType::Sts,
                    super::PolicyType::NoPolicyFound => rfc::PolicyType::NoPolicyFound,
                },
                policy_string: policy.strings.clone(),
                policy_domain: policy.domain.clone(),
                mx_host: policy.mx.clone(),
            },
            summary: rfc::Summary {
                total_success: count(counts.success),
                total_failure: count(counts.failed()),
            },
            failure_details: counts
                .failures
                .iter()
                .map(|(f, n)| rfc::FailureDetails {
                    result_type: result_type(&f.result),
                    sending_mta_ip: None,
                    receiving_mx_hostname: f.mx.clone(),
                    receiving_mx_helo: None,
                    receiving_ip: f.ip,
                    failed_session_count: count(*n),
                    additional_information: f.info.clone(),
                    failure_reason_code: None,
                })
                .collect(),
        })
        .collect();
    rfc::TlsReport {
        organization_name: Some(submitter.organization.clone()),
        date_range: rfc::DateRange::from_timestamps(p.start, p.end - 1),
        contact_info: Some(submitter.contact.clone()),
        report_id: report_id.to_string(),
        policies,
    }
}

fn result_type(name: &str) -> rfc::ResultType {
    serde_json::from_value(serde_json::Value::String(name.to_string()))
        .unwrap_or(rfc::ResultType::ValidationFailure)
}

/// The report as JSON text, without the fields it does not have (RFC 8460 gives optional
/// fields no null value).
pub fn json(report: &rfc::TlsReport) -> String {
    let mut value = serde_json::to_value(report).unwrap_or_default();
    drop_nulls(&mut value);
    value.to_string()
}

fn drop_nulls(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::Object(map) => {
            map.retain(|_, v| !v.is_null());
            map.values_mut().for_each(drop_nulls);
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(drop_nulls),
        _ => {}
    }
}

/// The message of RFC 8460 §5.3: `multipart/report; report-type="tlsrpt"` with the report as
/// `application/tlsrpt+gzip`, the TLS-Report-Domain and TLS-Report-Submitter headers.
pub fn message(
    report: &rfc::TlsReport,
    domain: &str,
    submitter: &Submitter,
    to: &[String],
) -> std::io::Result<Vec<u8>> {
    let mut gz = mail_auth::flate2::write::GzEncoder::new(
        Vec::new(),
        mail_auth::flate2::Compression::default(),
    );
    gz.write_all(json(report).as_bytes())?;
    let gz = gz.finish()?;
    let mut out = Vec::new();
    report.write_rfc5322_from_bytes(
        domain,
        &submitter.hostname,
        submitter.contact.as_str(),
        to.iter().map(String::as_str),
        &gz,
        &mut out,
    )?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::tlsrpt::PolicyType;

    fn session(t: i64, domain: &str, failure: Option<&str>) -> Session {
        Session {
            t,
            policy: Policy {
                kind: PolicyType::Sts,
                domain: domain.into(),
                strings: vec!["version: STSv1".into(), "mode: enforce".into()],
                mx: vec!["mx.b.test".into()],
            },
            failure: failure.map(|r| Failure {
                result: r.into(),
                mx: Some("mx.b.test".into()),
                ip: Some("127.0.0.2".parse().unwrap()),
                info: None,
            }),
        }
    }

    #[test]
    fn pending_skips_what_was_reported_and_what_is_not_over() {
        let day = 86_400 * 20_000;
        let sessions = vec![
            session(day + 10, "b.test", None),
            session(day + 20, "b.test", Some("certificate-host-mismatch")),
            session(day + 30, "b.test", Some("certificate-host-mismatch")),
            session(day + 40, "c.test", None),
            session(day + 50, "c.test", None),
            session(day + 90_000, "b.test", None),
        ];
        let reported = BTreeMap::from([("c.test".to_string(), day + 45)]);
        let p = pending(&sessions, &reported, day + 86_400);
        let b = &p["b.test"];
        assert_eq!((b.start, b.end), (day, day + 86_400));
        assert_eq!(b.sessions(), (1, 2));
        let c = &p["c.test"];
        assert_eq!((c.start, c.sessions()), (day + 45, (1, 0)));
    }

    #[test]
    fn the_json_names_fields_as_rfc_8460_does_and_has_no_nulls() {
        let day = 86_400 * 20_000;
        let sessions = vec![
            session(day + 10, "b.test", None),
            session(day + 20, "b.test", Some("certificate-host-mismatch")),
        ];
        let p = pending(&sessions, &BTreeMap::new(), day + 86_400);
        let submitter = Submitter {
            organization: "a.test".into(),
            hostname: "mx.a.test".into(),
            contact: "tls-reports@a.test".into(),
        };
        let r = report(&p["b.test"], &submitter, "r1@mx.a.test");
        let v: serde_json::Value = serde_json::from_str(&json(&r)).unwrap();
        assert_eq!(v["organization-name"], "a.test");
        assert_eq!(v["report-id"], "r1@mx.a.test");
        assert_eq!(v["date-range"]["start-datetime"], "2024-10-04T00:00:00Z");
        assert_eq!(v["date-range"]["end-datetime"], "2024-10-04T23:59:59Z");
        let pol = &v["policies"][0];
        assert_eq!(pol["policy"]["policy-type"], "sts");
        assert_eq!(pol["policy"]["policy-domain"], "b.test");
        assert_eq!(pol["summary"]["total-successful-session-count"], 1);
        assert_eq!(pol["summary"]["total-failure-session-count"], 1);
        let f = &pol["failure-details"][0];
        assert_eq!(f["result-type"], "certificate-host-mismatch");
        assert_eq!(f["receiving-ip"], "127.0.0.2");
        assert_eq!(f["failed-session-count"], 1);
        assert!(f.get("receiving-mx-helo").is_none());
        assert!(!json(&r).contains("null"));
        let msg = message(&r, "b.test", &submitter, &["rua@b.test".into()]).unwrap();
        let text = String::from_utf8_lossy(&msg);
        assert!(text.contains("TLS-Report-Domain: b.test"), "{text}");
        assert!(text.contains("report-type=\"tlsrpt\""), "{text}");
        assert!(text.contains("application/tlsrpt+gzip"), "{text}");
    }
}
