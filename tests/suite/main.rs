//! The integration tests, in one test binary (one link instead of one per file): each module
//! is one former test file. Benchmarks, the crash tests and the tests that measure time or
//! memory stay binaries of their own (`tests/*.rs`), so they do not share a process with others.

#[path = "../support/mod.rs"]
mod support;

mod audit_concurrency;
mod chunking;
mod claim_on_arrival;
mod cli;
mod closed_pipe;
mod connectors;
mod dane;
mod dane_dns;
mod dane_more;
mod decrypt_cli;
mod decrypt_licensing;
mod decrypt_password;
mod demo;
mod disk_full;
mod dns;
mod dsn;
mod fingerprint;
mod hostile;
mod hsm;
mod hsm_roots;
mod imap;
mod imap_folder_idle;
mod imap_large;
mod imap_mbsync;
mod key_index_suite;
mod licensing_http;
mod licensing_passwords;
mod licensing_reload;
mod licensing_serve;
mod licensing_service;
mod mail_store_suite;
mod malloc_tunable;
mod message_index_suite;
mod missing_headers;
mod module_layers;
mod mta_sts;
mod operations;
mod operations_admin;
mod operations_reload;
mod ops_files;
mod pg_audit;
mod pg_cluster;
mod pg_database;
mod pg_mailbox;
mod postgres_queue;
mod queue_at_rest;
mod queue_hold;
mod queue_store_suite;
mod readme;
mod relay;
mod requiretls;
mod retransmit;
mod rms_cli;
mod rms_flow;
mod routing;
mod rules_cli;
mod rules_flow;
mod secrets;
mod sender_auth;
mod sender_auth_default;
mod shutdown;
mod smime_flow;
mod smime_interop;
mod smime_sign_config;
mod smime_sign_flow;
mod smime_sign_interop;
mod storage_migrate;
mod store;
mod store_binding;
mod store_cli;
mod store_folders;
mod streaming;
mod submission;
mod tls_check;
mod tls_report;
mod tls_resumption;
mod tls_reuse;
mod use_license_openssl;

/// A file put in `tests/suite/` without its `mod` line here would never be compiled or run.
#[test]
fn every_file_of_the_suite_is_one_of_its_modules() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/suite");
    let main = std::fs::read_to_string(dir.join("main.rs")).expect("main.rs");
    let mut missing = Vec::new();
    for entry in std::fs::read_dir(&dir).expect("tests/suite") {
        let path = entry.expect("entry").path();
        let name = match path.file_stem().and_then(|n| n.to_str()) {
            Some(name) if path.is_dir() && path.join("mod.rs").exists() => name.to_string(),
            Some(name) if path.extension().is_some_and(|e| e == "rs") && name != "main" => {
                name.to_string()
            }
            _ => continue,
        };
        if !main.lines().any(|l| l == format!("mod {name};")) {
            missing.push(name);
        }
    }
    assert!(
        missing.is_empty(),
        "tests/suite/main.rs lacks `mod` lines for {missing:?}"
    );
}
