//! Helpers shared by the integration tests; each test binary uses the parts it needs.
#![allow(dead_code)]

pub mod admin;
pub mod bench_report;
pub mod crash_marks;
pub mod dane;
pub mod dns;
pub mod dnssec;
pub mod domains;
pub mod https;
pub mod imap;
pub mod nsd;
pub mod peers;
pub mod pg_nodes;
pub mod plain_smtp;
pub mod policy_host;
pub mod postgres;
pub mod raw;
pub mod rms;
pub mod smime_files;
pub mod softhsm;
pub mod stores;
pub mod tlsrpt;
