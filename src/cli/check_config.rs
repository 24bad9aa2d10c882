//! `sealpost check-config`: validate a configuration and the files it names.

use std::process::ExitCode;

use super::ConfigArgs;

pub fn run(args: ConfigArgs) -> anyhow::Result<ExitCode> {
    let config = match args.load() {
        Ok(c) => c,
        Err(code) => return Ok(code),
    };
    outln!(
        "{}: ok ({} as {}; {} listener(s), {} local domain(s), {} mailbox(es), {} static route(s), TLS {}, {} rule(s){})",
        config.path.display(),
        config.hostname,
        config.data_dir.display(),
        config.listeners.len(),
        config.local_domains.len(),
        config.mailboxes.len(),
        config.static_routes.len(),
        if config.tls.is_some() { "on" } else { "off" },
        config.rules.len(),
        match &config.smime_signing {
            Some(s) => format!(", {} S/MIME signing key(s)", s.keys.len()),
            None => String::new(),
        },
    );
    outln!("{}", crate::app::sender_checks_summary(&config));
    Ok(ExitCode::SUCCESS)
}
