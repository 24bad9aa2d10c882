//! Reports sealpost sends to other domains about the mail it sent them: TLS-RPT (RFC 8460).

pub mod tlsrpt;
