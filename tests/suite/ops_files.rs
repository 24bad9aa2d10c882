//! The operations files (docker/Dockerfile, docker/compose.yaml, docker/sealpost.service) checked
//! against the repository and the real binary, without Docker: every path they reference exists,
//! every `sealpost ...` command line they run parses, the compose configs validate as mounted,
//! the unit is hardened; plus `sealpost completions` and `sealpost health`.

use crate::support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use support::domains::{free_port, load, sealpost, DomainSpec};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(repo().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// One compose service, as far as these checks need it.
#[derive(Debug, Default)]
struct Service {
    hostname: Option<String>,
    command: Vec<String>,
    /// (source, target) of each `volumes:` entry; named volumes have a source without `/`.
    volumes: Vec<(String, String)>,
    aliases: Vec<String>,
}

/// A line-based reading of docker/compose.yaml: services (with the `x-sealpost` anchor's keys
/// kept apart), their hostname, command, volumes and network aliases, and every `context:` /
/// `dockerfile:` / `subnet:` value.
struct Compose {
    services: BTreeMap<String, Service>,
    contexts: Vec<String>,
    dockerfiles: Vec<String>,
    subnets: Vec<String>,
}

fn indent(line: &str) -> usize {
    line.len() - line.trim_start().len()
}

fn parse_compose(text: &str) -> Compose {
    let mut compose = Compose {
        services: BTreeMap::new(),
        contexts: Vec::new(),
        dockerfiles: Vec::new(),
        subnets: Vec::new(),
    };
    let mut top = String::new();
    let mut service: Option<String> = None;
    let mut list_key = String::new();
    for line in text.lines() {
        let body = line.split(" #").next().unwrap_or("").trim_end();
        let trimmed = body.trim_start();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let ind = indent(body);
        if ind == 0 {
            top = trimmed.trim_end_matches(':').to_string();
            service = None;
            continue;
        }
        if let Some(v) = trimmed.strip_prefix("context: ") {
            compose.contexts.push(v.trim().to_string());
        }
        if let Some(v) = trimmed.strip_prefix("dockerfile: ") {
            compose.dockerfiles.push(v.trim().to_string());
        }
        if let Some(v) = trimmed.strip_prefix("- subnet: ") {
            compose.subnets.push(v.trim().to_string());
        }
        if top != "services" {
            continue;
        }
        if ind == 2 {
            let name = trimmed.trim_end_matches(':').to_string();
            compose.services.entry(name.clone()).or_default();
            service = Some(name);
            continue;
        }
        let Some(name) = &service else { continue };
        let s = compose.services.get_mut(name).expect("service entry");
        if ind == 4 {
            list_key = trimmed.split(':').next().unwrap_or("").to_string();
            if let Some(v) = trimmed.strip_prefix("hostname: ") {
                s.hostname = Some(v.trim().to_string());
            }
            if let Some(v) = trimmed.strip_prefix("command: ") {
                s.command = serde_json::from_str(v).unwrap_or_else(|e| {
                    panic!("compose {name}: command must be a JSON-style list: {v}: {e}")
                });
            }
            continue;
        }
        if list_key == "volumes" {
            if let Some(v) = trimmed.strip_prefix("- ") {
                let parts: Vec<&str> = v.split(':').collect();
                assert!(parts.len() >= 2, "compose {name}: volume {v}");
                s.volumes.push((parts[0].to_string(), parts[1].to_string()));
            }
        }
        if let Some(v) = trimmed.strip_prefix("aliases: ") {
            let v = v.trim().trim_start_matches('[').trim_end_matches(']');
            s.aliases.extend(v.split(',').map(|a| a.trim().to_string()));
        }
    }
    compose
}

/// Dockerfile instructions (continuation lines joined), as (INSTRUCTION, arguments).
fn parse_dockerfile(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let t = line.trim();
        if current.is_empty() && (t.is_empty() || t.starts_with('#')) {
            continue;
        }
        if let Some(head) = t.strip_suffix('\\') {
            current.push_str(head);
            current.push(' ');
            continue;
        }
        current.push_str(t);
        let (ins, args) = current.split_once(' ').unwrap_or((&current, ""));
        out.push((ins.to_uppercase(), args.trim().to_string()));
        current.clear();
    }
    out
}

/// The argument list of an exec-form instruction (`["a", "b"]`).
fn exec_form(args: &str) -> Vec<String> {
    serde_json::from_str(args).unwrap_or_else(|e| panic!("not exec form (JSON list): {args}: {e}"))
}

/// Checks that `args` (without the program) is a command line the binary accepts: each word
/// before the first option names a subcommand (while the current level has subcommands), and
/// every `--option` appears in that subcommand's `--help`.
fn assert_cli_accepts(origin: &str, args: &[String]) {
    let mut path: Vec<String> = Vec::new();
    let mut help = help_of(origin, &path);
    let mut rest = args;
    while let Some(word) = rest.first() {
        if word.starts_with('-') || !has_subcommand(&help, word) {
            break;
        }
        path.push(word.clone());
        help = help_of(origin, &path);
        rest = &rest[1..];
    }
    assert!(!path.is_empty(), "{origin}: no subcommand in {args:?}");
    for option in rest.iter().filter(|a| a.starts_with("--")) {
        let name = option.split('=').next().unwrap_or(option);
        assert!(
            help.contains(&format!("{name} ")) || help.contains(&format!("{name}\n")),
            "{origin}: `sealpost {}` has no option {name}:\n{help}",
            path.join(" ")
        );
    }
}

fn help_of(origin: &str, path: &[String]) -> String {
    let mut args: Vec<&str> = path.iter().map(String::as_str).collect();
    args.push("--help");
    let (code, out, err) = sealpost(&args);
    assert_eq!(code, 0, "{origin}: sealpost {args:?}: {err}");
    out
}

/// Whether `help` lists `word` under "Commands:".
fn has_subcommand(help: &str, word: &str) -> bool {
    let Some((_, commands)) = help.split_once("Commands:\n") else {
        return false;
    };
    commands
        .lines()
        .take_while(|l| l.starts_with(' ') || l.is_empty())
        .any(|l| l.split_whitespace().next() == Some(word))
}

/// Builds the service's filesystem as compose mounts it under `root` (bind-mounted files copied,
/// directories linked, named volumes as empty directories); asserts every bind source exists.
fn mount(service: &str, volumes: &[(String, String)], root: &Path) {
    let docker = repo().join("docker");
    for (source, target) in volumes {
        let at = root.join(target.trim_start_matches('/'));
        std::fs::create_dir_all(at.parent().expect("target parent")).unwrap();
        if source.starts_with('.') || source.starts_with('/') {
            let src = docker.join(source);
            assert!(
                src.exists(),
                "compose {service}: volume source {source} does not exist"
            );
            if src.is_dir() {
                std::os::unix::fs::symlink(src.canonicalize().unwrap(), &at).unwrap();
            } else {
                std::fs::copy(&src, &at).unwrap();
            }
        } else {
            std::fs::create_dir_all(&at).unwrap();
        }
    }
}

/// A `[storage]` password file in a volume that the `<domain>-db-secret` service fills before the
/// nodes start: written here (mode 0600, as that service installs it) into the mounted volume.
fn install_db_password(compose: &Compose, domain: &str, root: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let config: toml::Table = toml::from_str(&read(&format!("docker/{domain}.toml"))).unwrap();
    let Some(file) = config
        .get("storage")
        .and_then(|s| s.get("password_file"))
        .and_then(|f| f.as_str())
    else {
        return;
    };
    let installer = &compose.services[&format!("{domain}-db-secret")];
    let (volume, target) = &installer.volumes[0];
    let path = Path::new("/etc/sealpost").join(file);
    assert!(
        path.starts_with(target),
        "docker/{domain}.toml: password_file {file} is not in the volume {volume} at {target}"
    );
    let path = root.join(path.strip_prefix("/").unwrap());
    std::fs::write(&path, "test\n").unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

#[test]
fn compose_file_references_existing_files_and_valid_commands() {
    let compose = parse_compose(&read("docker/compose.yaml"));
    let docker = repo().join("docker");
    for name in [
        "contoso",
        "fabrikam",
        "fabrikam-2",
        "postgres",
        "fabrikam-db-secret",
        "client",
    ] {
        assert!(
            compose.services.contains_key(name),
            "compose: no service {name}"
        );
    }
    assert!(!compose.contexts.is_empty(), "compose: no build context");
    for (context, dockerfile) in compose.contexts.iter().zip(&compose.dockerfiles) {
        let context = docker.join(context);
        assert!(context.is_dir(), "compose: context {}", context.display());
        assert!(context.join(dockerfile).is_file(), "compose: {dockerfile}");
    }
    assert_eq!(compose.subnets.len(), 1, "compose: one network subnet");
    let subnet = &compose.subnets[0];

    for domain in ["contoso", "fabrikam"] {
        let other = if domain == "contoso" {
            "fabrikam"
        } else {
            "contoso"
        };
        let s = &compose.services[domain];
        let host = format!("mx.{domain}.test");
        assert_eq!(
            s.hostname.as_deref(),
            Some(host.as_str()),
            "compose {domain}"
        );
        assert!(
            s.aliases.contains(&host),
            "compose {domain}: network alias {host}"
        );

        // The command line is the real CLI's, and `check-config` with the very same arguments
        // accepts the config as the container sees it.
        assert_eq!(s.command.first().map(String::as_str), Some("serve"));
        assert_cli_accepts(&format!("compose {domain}"), &s.command);
        let dir = tempfile::tempdir().unwrap();
        mount(domain, &s.volumes, dir.path());
        install_db_password(&compose, domain, dir.path());
        let mut args: Vec<String> = vec!["check-config".into()];
        for a in &s.command[1..] {
            args.push(if a.starts_with('/') {
                dir.path()
                    .join(a.trim_start_matches('/'))
                    .display()
                    .to_string()
            } else {
                a.clone()
            });
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (code, out, err) = sealpost(&args);
        assert_eq!(code, 0, "compose {domain}: {args:?}: {err}");
        assert!(out.contains(&format!("ok ({host} as ")), "{out}");

        // The config reaches the other container by its alias, and lets the compose network relay.
        let config = read(&format!("docker/{domain}.toml"));
        assert!(
            config.contains(&format!("\"mx.{other}.test:25\"")),
            "docker/{domain}.toml must route {other}.test to mx.{other}.test:25"
        );
        assert!(
            config.contains("address = \"0.0.0.0:25\""),
            "docker/{domain}.toml"
        );
        assert!(
            config.contains(&format!("relay_networks = [\"{subnet}\"]")),
            "docker/{domain}.toml: relay_networks must be the compose subnet {subnet}"
        );
    }

    // fabrikam's second node: the same configuration, its own data, the same keystore.
    let (one, two) = (
        &compose.services["fabrikam"],
        &compose.services["fabrikam-2"],
    );
    assert_eq!(one.command, two.command);
    assert_eq!(one.aliases, two.aliases);
    let target = |s: &Service, t: &str| s.volumes.iter().find(|(_, at)| at == t).cloned();
    for t in [
        "/etc/sealpost/fabrikam.toml",
        "/var/lib/sealpost-keystore",
        "/etc/sealpost/db",
    ] {
        assert_eq!(target(one, t), target(two, t), "compose fabrikam-2: {t}");
    }
    assert_ne!(
        target(one, "/var/lib/sealpost"),
        target(two, "/var/lib/sealpost"),
        "compose fabrikam-2: a data volume of its own"
    );
    assert!(repo().join("docker/fabrikam-db.password").is_file());

    // The client mounts files that exist and sends to contoso's alias.
    let client = &compose.services["client"];
    let dir = tempfile::tempdir().unwrap();
    mount("client", &client.volumes, dir.path());
    let script = read("docker/send-test-mail.py");
    assert!(script.contains("\"mx.contoso.test\"") && script.contains("bob@fabrikam.test"));
    let ca = script
        .lines()
        .find_map(|l| l.strip_prefix("CA = "))
        .expect("CA = in the client script")
        .trim_matches('"');
    assert!(
        client.volumes.iter().any(|(_, t)| t == ca),
        "client: {ca} is not mounted"
    );
}

#[test]
fn dockerfile_copies_existing_files_and_runs_valid_commands() {
    let instructions = parse_dockerfile(&read("docker/Dockerfile"));
    let get = |name: &str| -> Vec<&String> {
        instructions
            .iter()
            .filter(|(i, _)| i == name)
            .map(|(_, a)| a)
            .collect()
    };
    let froms = get("FROM");
    assert_eq!(froms.len(), 2, "multi-stage: {froms:?}");
    assert!(froms[0].starts_with("rust:"), "{froms:?}");
    assert!(froms[1].starts_with("debian:bookworm-slim"), "{froms:?}");
    let runs = get("RUN");
    assert!(
        runs.iter()
            .any(|r| r.contains("cargo build --release --locked")),
        "{runs:?}"
    );

    // COPY sources (build context: the repository root) exist.
    for copy in get("COPY") {
        if copy.starts_with("--from") {
            continue;
        }
        let words: Vec<&str> = copy.split_whitespace().collect();
        for source in &words[..words.len() - 1] {
            assert!(
                repo().join(source).exists(),
                "Dockerfile: COPY source {source} does not exist"
            );
        }
    }
    assert_eq!(get("USER"), vec!["sealpost"]);
    let volumes = get("VOLUME");
    for v in ["/etc/sealpost", "/var/lib/sealpost"] {
        assert!(
            volumes.iter().any(|l| l.contains(&format!("\"{v}\""))),
            "VOLUME {v}"
        );
    }
    assert_eq!(get("EXPOSE"), vec!["25 587 465"]);

    // ENTRYPOINT is the binary; CMD and HEALTHCHECK are command lines it accepts.
    let bin = "/usr/local/bin/sealpost";
    assert_eq!(exec_form(get("ENTRYPOINT")[0]), vec![bin.to_string()]);
    assert!(runs.iter().any(|r| r.contains(bin)) || get("COPY").iter().any(|c| c.contains(bin)));
    assert_cli_accepts("Dockerfile CMD", &exec_form(get("CMD")[0]));
    let health = get("HEALTHCHECK")[0];
    let (_, cmd) = health
        .split_once("CMD ")
        .expect("HEALTHCHECK ... CMD [...]");
    let argv = exec_form(cmd);
    assert_eq!(argv[0], bin);
    assert_eq!(argv[1], "health");
    assert_cli_accepts("Dockerfile HEALTHCHECK", &argv[1..]);
}

#[test]
fn systemd_unit_is_hardened_and_runs_valid_commands() {
    let unit = read("docker/sealpost.service");
    let mut keys: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for line in unit.lines() {
        let line = line.trim();
        if line.starts_with('#') || line.starts_with('[') {
            continue;
        }
        if let Some((k, v)) = line.split_once('=') {
            keys.entry(k.to_string()).or_default().push(v.to_string());
        }
    }
    let one = |k: &str| -> &str {
        keys.get(k)
            .and_then(|v| v.first())
            .map(String::as_str)
            .unwrap_or_else(|| panic!("sealpost.service: no {k}="))
    };
    for (k, v) in [
        ("Type", "simple"),
        ("User", "sealpost"),
        ("ExecReload", "/bin/kill -HUP $MAINPID"),
        ("Restart", "on-failure"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
        ("NoNewPrivileges", "yes"),
        ("CapabilityBoundingSet", "CAP_NET_BIND_SERVICE"),
        ("AmbientCapabilities", "CAP_NET_BIND_SERVICE"),
        ("ProtectKernelTunables", "yes"),
        ("ProtectKernelModules", "yes"),
        ("ProtectControlGroups", "yes"),
        ("RestrictNamespaces", "yes"),
        ("RestrictSUIDSGID", "yes"),
    ] {
        assert_eq!(one(k), v, "sealpost.service: {k}");
    }
    assert!(one("ReadWritePaths")
        .split_whitespace()
        .any(|p| p == "/var/lib/sealpost"));
    let exec: Vec<&String> = ["ExecStartPre", "ExecStart"]
        .iter()
        .flat_map(|k| keys.get(*k).into_iter().flatten())
        .collect();
    assert!(exec.iter().any(|l| l.contains(" serve ")), "{exec:?}");
    for line in exec {
        let argv: Vec<String> = line.split_whitespace().map(String::from).collect();
        assert_eq!(argv[0], "/usr/local/bin/sealpost", "{line}");
        assert_cli_accepts("sealpost.service", &argv[1..]);
    }
}

#[test]
fn completions_for_each_shell() {
    let (code, out, err) = sealpost(&["completions", "bash"]);
    assert_eq!(code, 0, "{err}");
    for word in [
        "serve",
        "tls-check",
        "check-config",
        "health",
        "completions",
    ] {
        assert!(out.contains(word), "bash completions lack {word}");
    }
    for queue in ["delete", "hold", "release"] {
        let word = format!("sealpost__subcmd__queue__subcmd__{queue}");
        assert!(out.contains(&word), "bash completions lack queue {queue}");
    }
    for shell in ["zsh", "fish"] {
        let (code, out, err) = sealpost(&["completions", shell]);
        assert_eq!(code, 0, "{shell}: {err}");
        assert!(out.contains("tls-check"), "{shell}: {out}");
    }
    let (code, _, _) = sealpost(&["completions", "tcsh"]);
    assert_eq!(code, 2, "an unknown shell is a usage error");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_passes_on_a_server_and_fails_on_a_closed_port() {
    let dir = tempfile::tempdir().unwrap();
    let config = DomainSpec::new("contoso", &["alice@contoso.test"], free_port()).write(dir.path());
    let server = sealpost::app::start(load(&config)).await.unwrap();
    let addr = server.local_addrs()[0].to_string();
    let closed = format!("127.0.0.1:{}", free_port());

    // A listener that answers like a web server, not an SMTP server.
    let http = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let http_addr = http.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        use std::io::Write;
        if let Ok((mut s, _)) = http.accept() {
            let _ = s.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n");
        }
    });

    let run = |target: String| {
        tokio::task::spawn_blocking(move || {
            let out = Command::new(env!("CARGO_BIN_EXE_sealpost"))
                .args(["health", "--timeout", "5s", &target])
                .output()
                .expect("run sealpost");
            (
                out.status.code(),
                String::from_utf8_lossy(&out.stdout).into_owned(),
            )
        })
    };
    let (code, out) = run(addr.clone()).await.unwrap();
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("ok: 220 "), "{out}");
    let (code, out) = run(closed).await.unwrap();
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("unhealthy"), "{out}");
    let (code, out) = run(http_addr).await.unwrap();
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("not an SMTP reply"), "{out}");
    server.shutdown().await;
}
