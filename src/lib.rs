//! sealpost: a mail transfer agent with TLS everywhere and encryption by policy.
#![forbid(unsafe_code)]

pub mod admin;
pub mod app;
pub mod auth;
pub mod cleanup;
pub mod cli;
pub mod config;
pub mod crypto;
pub mod delivery;
pub mod dns;
pub mod imap;
pub mod keys;
pub mod licensing;
pub mod live;
pub mod mail;
pub mod memory;
pub mod net;
pub mod pg;
pub mod queue;
pub mod report;
pub mod rules;
pub mod sender_auth;
pub mod smtp;
pub mod store;
pub mod telemetry;
pub mod tls;
pub mod units;
