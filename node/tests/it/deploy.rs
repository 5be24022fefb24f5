//! The deployment files in `deploy/`: the systemd unit passes `systemd-analyze verify` (every
//! key known, the command executable), and its sandbox stays tight
//! (`systemd-analyze security --offline`). The container image and the compose file are not run
//! here (no container runtime): `deploy/compose/ceremony` runs for real and `compose.yaml` is
//! checked against what it wrote, and the image's HEALTHCHECK against an admin endpoint.

use std::{
    collections::{BTreeMap, BTreeSet},
    io::{Read, Write},
    net::{SocketAddr, TcpListener},
    path::{Path, PathBuf},
    process::Command,
};

/// The unit with its command pointing at the binary under test, as an instance
/// `caasiope@member.service` in a temporary directory.
fn unit_instance(dir: &std::path::Path) -> std::path::PathBuf {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let text = std::fs::read_to_string(root.join("deploy/systemd/caasiope@.service")).unwrap();
    assert!(text.contains("ExecStart=/usr/local/bin/caasiope run --config"), "{text}");
    let text = text.replace("/usr/local/bin/caasiope", env!("CARGO_BIN_EXE_caasiope"));
    let path = dir.join("caasiope@member.service");
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn the_systemd_unit_verifies_and_is_sandboxed() {
    let dir = tempfile::tempdir().unwrap();
    let unit = unit_instance(dir.path());
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&unit)
        .output()
        .expect("systemd-analyze (Debian's systemd package; scripts/setup installs it)");
    let stderr = String::from_utf8_lossy(&out.stderr);
    // A misspelt key is only a warning to systemd: any output fails here.
    assert!(out.status.success() && stderr.trim().is_empty(), "systemd-analyze verify: {stderr}");
    let out =
        Command::new("systemd-analyze").args(["security", "--offline=yes"]).arg(&unit).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let exposure: f64 = text
        .lines()
        .find_map(|l| l.split("Overall exposure level for ").nth(1))
        .and_then(|rest| rest.split(": ").nth(1))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no exposure level in: {text}"));
    // 0 is fully locked down, 10 unprotected; "OK" is below 2 (1.6 when written).
    assert!(exposure < 2.0, "exposure {exposure}:\n{text}");
}

/// The repository's root.
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The services of a compose file, each as the trimmed lines of its block, with the lines of the
/// `x-…: &anchor` blocks it merges (`<<: *anchor`) added: the subset of YAML compose.yaml is
/// written in (two-space indents, one service per `  name:` line under `services:`).
fn compose_services(text: &str) -> BTreeMap<String, Vec<String>> {
    let mut anchors: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut services: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let (mut top, mut current): (String, Option<String>) = (String::new(), None);
    for line in text.lines().filter(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#')) {
        let indent = line.len() - line.trim_start().len();
        let trimmed = line.trim().to_owned();
        if indent == 0 {
            top = trimmed.clone();
            current = trimmed.split_once(": &").map(|(_, anchor)| anchor.to_owned());
            if let Some(anchor) = &current {
                anchors.insert(anchor.clone(), Vec::new());
            }
        } else if top.starts_with("x-") {
            anchors.get_mut(current.as_ref().unwrap()).unwrap().push(trimmed);
        } else if top == "services:" && indent == 2 {
            let name = trimmed.strip_suffix(':').unwrap_or_else(|| panic!("a service line: {line}"));
            current = Some(name.to_owned());
            services.insert(name.to_owned(), Vec::new());
        } else if top == "services:" {
            services.get_mut(current.as_ref().unwrap()).unwrap().push(trimmed);
        }
    }
    for lines in services.values_mut() {
        let merged: Vec<String> = lines
            .iter()
            .filter_map(|l| l.strip_prefix("<<: *"))
            .flat_map(|anchor| anchors.get(anchor).unwrap_or_else(|| panic!("no anchor {anchor}")).clone())
            .collect();
        lines.extend(merged);
    }
    services
}

/// The value of `key: value` among a block's lines, unquoted.
fn compose_value<'a>(lines: &'a [String], key: &str) -> Option<&'a str> {
    lines.iter().find_map(|l| l.strip_prefix(key)?.strip_prefix(": ")).map(|v| v.trim_matches('"'))
}

/// The list items (`- item`) of a block's lines, unquoted.
fn compose_items(lines: &[String]) -> Vec<&str> {
    lines.iter().filter_map(|l| l.strip_prefix("- ")).map(|v| v.trim_matches('"')).collect()
}

/// `KEY=value` lines of an environment file.
fn env_file(path: &Path) -> BTreeMap<String, String> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

fn toml_str<'a>(v: &'a toml::Value, key: &str) -> &'a str {
    v.get(key).and_then(toml::Value::as_str).unwrap_or_else(|| panic!("no {key} in {v}"))
}

fn addr(text: &str) -> SocketAddr {
    text.parse().unwrap_or_else(|e| panic!("{text}: {e}"))
}

fn run_ceremony(out: &Path) -> std::process::Output {
    Command::new(root().join("deploy/compose/ceremony"))
        .arg(out)
        .env("CAASIOPE_BIN", env!("CARGO_BIN_EXE_caasiope"))
        .output()
        .expect("deploy/compose/ceremony (bash)")
}

/// `deploy/compose/ceremony` runs the real ceremony, and `compose.yaml` mounts what it wrote:
/// every member's service mounts its directory (keys, genesis, config) read-only and its store
/// read-write, at the address its peers and Prometheus reach it, on the ports its config
/// listens on; the explorer replicates into the compose's ClickHouse with the credentials
/// ClickHouse is given; Prometheus scrapes every process.
#[test]
fn the_compose_ceremony_writes_what_the_compose_file_mounts() {
    let compose_dir = root().join("deploy/compose");
    let compose = std::fs::read_to_string(compose_dir.join("compose.yaml")).unwrap();
    let services = compose_services(&compose);
    let dockerfile = std::fs::read_to_string(root().join("deploy/container/Dockerfile")).unwrap();
    let proxy = std::fs::read_to_string(compose_dir.join("metrics-proxy.cfg")).unwrap();

    let out = tempfile::tempdir().unwrap();
    let run = run_ceremony(out.path());
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "deploy/compose/ceremony: {stderr}");
    let members_dir = out.path().join("members");
    let dotenv = std::fs::read_to_string(out.path().join(".env")).unwrap();
    // Run again: it refuses, and changes nothing.
    let again = run_ceremony(out.path());
    assert!(!again.status.success(), "a second ceremony over the first succeeded");
    assert!(String::from_utf8_lossy(&again.stderr).contains("refusing"), "{again:?}");
    assert_eq!(std::fs::read_to_string(out.path().join(".env")).unwrap(), dotenv);

    // Where a service is reached: its own address, or that of the service whose network it
    // joins (a validator's metrics proxy).
    let ip_of = |service: &str| -> String {
        let lines = services.get(service).unwrap_or_else(|| panic!("no service {service} in compose.yaml"));
        match compose_value(lines, "network_mode").and_then(|m| m.strip_prefix("service:")) {
            Some(owner) => compose_value(&services[owner], "ipv4_address").unwrap().to_owned(),
            None => compose_value(lines, "ipv4_address")
                .unwrap_or_else(|| panic!("{service}: no ipv4_address"))
                .to_owned(),
        }
    };
    let subnet = compose.lines().find_map(|l| l.trim().strip_prefix("- subnet: ")).unwrap();
    let prefix = subnet.strip_suffix("0/24").expect("a /24 subnet");
    let addresses: Vec<&str> = services.values().filter_map(|l| compose_value(l, "ipv4_address")).collect();
    assert!(addresses.iter().all(|a| a.starts_with(prefix)), "{addresses:?} not all in {subnet}");
    assert_eq!(addresses.iter().collect::<BTreeSet<_>>().len(), addresses.len(), "{addresses:?}");

    // Every file compose.yaml mounts or reads exists once the ceremony ran.
    for lines in services.values() {
        let sources = compose_items(lines)
            .into_iter()
            .filter_map(|item| item.split(':').next().filter(|s| s.starts_with("./")))
            .chain(compose_value(lines, "env_file"));
        for source in sources {
            let base = if source.starts_with("./members/") { out.path() } else { compose_dir.as_path() };
            assert!(
                base.join(source).exists(),
                "compose.yaml mounts {source}, which the ceremony did not write"
            );
        }
    }

    // The containers run as the files' owner (the image's user when the ceremony ran as root).
    let dotenv = env_file(&out.path().join(".env"));
    let caasiope = &services["validator-1"];
    assert_eq!(
        compose_value(caasiope, "user").map(|u| u.contains("${CAASIOPE_UID") && u.contains("${CAASIOPE_GID")),
        Some(true)
    );
    let owner = std::os::unix::fs::MetadataExt::uid(
        &std::fs::metadata(members_dir.join("validator-1/node.key")).unwrap(),
    );
    assert_eq!(dotenv["CAASIOPE_UID"], owner.to_string());
    let me = std::os::unix::fs::MetadataExt::uid(&std::fs::metadata(out.path()).unwrap());
    if owner != me {
        assert!(
            dockerfile.contains(&format!("--uid {owner} ")),
            "the files are handed to uid {owner}, not the image's user"
        );
    }

    let admin_port: u16 = dockerfile
        .lines()
        .find_map(|l| l.strip_prefix("ENV CAASIOPE_ADMIN_PORT="))
        .and_then(|p| p.trim().parse().ok())
        .expect("ENV CAASIOPE_ADMIN_PORT in the Dockerfile");
    let targets = prometheus_targets(&members_dir.join("prometheus.yml"));
    let mut expected_targets = BTreeMap::new();
    let clickhouse_env = env_file(&members_dir.join("clickhouse.env"));

    let mut members = BTreeMap::new();
    for entry in std::fs::read_dir(&members_dir).unwrap() {
        let dir = entry.unwrap().path();
        if dir.join("member.json").exists() {
            let member: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(dir.join("member.json")).unwrap()).unwrap();
            let config: toml::Value =
                toml::from_str(&std::fs::read_to_string(dir.join("config.toml")).unwrap()).unwrap();
            members.insert(member["name"].as_str().unwrap().to_owned(), (dir, member, config));
        }
    }
    let names: BTreeSet<&str> = members.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        BTreeSet::from(["explorer", "validator-1", "validator-2", "validator-3", "validator-4"]),
        "the ceremony's members"
    );
    for (name, (dir, member, config)) in &members {
        let role = member["role"].as_str().unwrap();
        let lines = &services[name.as_str()];
        assert_eq!(compose_value(lines, "image"), Some("${CAASIOPE_IMAGE:-caasiope:local}"), "{name}");
        let volumes = compose_items(lines);
        assert!(
            volumes.contains(&format!("./members/{name}:/var/lib/caasiope:ro").as_str()),
            "{name}: {volumes:?}"
        );
        assert!(
            volumes.contains(&format!("./members/{name}/data:/var/lib/caasiope/data").as_str()),
            "{name}: {volumes:?}"
        );
        let command = compose_value(lines, "command");
        assert_eq!(command, Some(r#"["run", "--config", "/var/lib/caasiope/config.toml"]"#), "{name}");
        // What the node reads in its directory, and no governance key.
        for file in ["config.toml", "genesis.toml", "node.crt", "node.key", "data"] {
            assert!(dir.join(file).exists(), "{name}: no {file}");
        }
        assert_eq!(dir.join("validator.key").exists(), role == "validator", "{name}: validator.key");
        assert!(
            !dir.join("governance.key").exists(),
            "{name}: its governance key is mounted into its container"
        );
        for path in ["data_dir", "genesis", "node_dir"] {
            assert!(
                !toml_str(config, path).starts_with('/'),
                "{name}: {path} is not relative to the member's directory"
            );
        }

        // Its address: where its peers reach it and where it listens.
        let ip = ip_of(name);
        let advertise = addr(member["advertise"].as_str().unwrap());
        let listen = addr(toml_str(config, "listen"));
        assert_eq!(
            advertise.ip().to_string(),
            ip,
            "{name}: advertised at another address than compose.yaml's"
        );
        assert_eq!(listen.port(), advertise.port(), "{name}");
        assert!(listen.ip().is_unspecified(), "{name}: listens on {listen}");
        let admin = addr(toml_str(config, "admin_listen"));
        assert_eq!(
            admin,
            SocketAddr::from(([127, 0, 0, 1], admin_port)),
            "{name}: the image's HEALTHCHECK asks another port"
        );
        let peers = config["peers"].as_array().unwrap();
        assert_eq!(peers.len(), 4, "{name}: {peers:?}");
        for peer in peers {
            let peer_name = toml_str(peer, "name");
            let (_, peer_member, peer_config) = &members[peer_name];
            let port = addr(toml_str(peer_config, "listen")).port();
            assert_eq!(
                toml_str(peer, "addr"),
                format!("{}:{port}", ip_of(peer_name)),
                "{name}'s peer {peer_name}"
            );
            assert_eq!(toml_str(peer, "identity"), peer_member["identity"].as_str().unwrap());
        }

        match role {
            "validator" => {
                // Its /metrics through the proxy owning its network namespace.
                let owner =
                    compose_value(lines, "network_mode").and_then(|m| m.strip_prefix("service:")).unwrap();
                assert_eq!(compose_value(&services[owner], "image"), Some("haproxy:3.2-alpine"), "{owner}");
                assert!(
                    compose_items(&services[owner])
                        .contains(&"./metrics-proxy.cfg:/usr/local/etc/haproxy/haproxy.cfg:ro")
                );
                assert!(
                    proxy.contains(&format!("server admin {admin}\n")),
                    "metrics-proxy.cfg does not forward to {admin}"
                );
                let port = proxy.lines().find_map(|l| l.trim().strip_prefix("bind :")).unwrap();
                expected_targets.insert(format!("{ip}:{port}"), (name.clone(), role.to_owned()));
                assert_eq!(toml_str(config, "validator_key"), "validator.key", "{name}");
            }
            "explorer" => {
                let api = addr(toml_str(config, "api_listen"));
                assert!(api.ip().is_unspecified(), "the explorer's API on {api}");
                let ports = compose_items(lines);
                assert!(ports.iter().any(|p| p.ends_with(&format!(":{0}:{0}", api.port()))), "{ports:?}");
                expected_targets.insert(format!("{ip}:{}", api.port()), (name.clone(), role.to_owned()));
                // Replication into the compose's ClickHouse, as the user ClickHouse creates.
                let ch = &config["clickhouse"];
                let url = toml_str(ch, "url");
                let (host, port) = url.strip_prefix("http://").unwrap().split_once(':').unwrap();
                let ch_service = &services[host];
                assert!(
                    compose_value(ch_service, "image").unwrap().starts_with("clickhouse/clickhouse-server:")
                );
                assert!(
                    compose_items(ch_service).iter().any(|p| p.ends_with(&format!(":{port}"))),
                    "{ch_service:?}"
                );
                assert_eq!(compose_value(ch_service, "env_file"), Some("./members/clickhouse.env"));
                assert_eq!(toml_str(ch, "user"), clickhouse_env["CLICKHOUSE_USER"]);
                assert_eq!(toml_str(ch, "password"), clickhouse_env["CLICKHOUSE_PASSWORD"]);
                assert_eq!(toml_str(ch, "database"), clickhouse_env["CLICKHOUSE_DB"]);
                let depends = lines.iter().skip_while(|l| *l != "depends_on:").nth(1);
                assert_eq!(
                    depends.map(String::as_str),
                    Some(&*format!("{host}:")),
                    "the explorer waits for ClickHouse"
                );
            }
            other => panic!("{name}: role {other}"),
        }
    }

    // Prometheus scrapes every process, with the labels the Grafana dashboard groups by.
    let prometheus = &services["prometheus"];
    assert!(
        compose_items(prometheus).contains(&"./members/prometheus.yml:/etc/prometheus/prometheus.yml:ro")
    );
    assert_eq!(targets, expected_targets, "Prometheus' targets");
    let check = Command::new("promtool")
        .args(["check", "config"])
        .arg(members_dir.join("prometheus.yml"))
        .output()
        .expect("promtool (Debian's prometheus package; scripts/setup installs it)");
    assert!(check.status.success(), "promtool check config: {}", String::from_utf8_lossy(&check.stderr));
}

/// `targets: ["IP:PORT"]` → (node, role) of a prometheus.yml as the ceremony writes it.
fn prometheus_targets(path: &Path) -> BTreeMap<String, (String, String)> {
    let text = std::fs::read_to_string(path).unwrap();
    let lines: Vec<&str> = text.lines().map(str::trim).collect();
    let quoted = |s: &str, key: &str| -> String {
        s.split_once(&format!("{key}: \"")).and_then(|(_, rest)| rest.split_once('"')).unwrap().0.to_owned()
    };
    lines
        .windows(2)
        .filter_map(|w| Some((w[0].strip_prefix("- targets: [\"")?.strip_suffix("\"]")?, w[1])))
        .map(|(target, labels)| (target.to_owned(), (quoted(labels, "node"), quoted(labels, "role"))))
        .collect()
}

/// The image's HEALTHCHECK (exec form, run by bash inside the container) asks
/// `GET /healthz` on CAASIOPE_ADMIN_PORT and is healthy only on a 200.
#[test]
fn the_image_healthcheck_asks_the_admin_endpoint() {
    let dockerfile = std::fs::read_to_string(root().join("deploy/container/Dockerfile")).unwrap();
    let command = dockerfile
        .lines()
        .skip_while(|l| !l.starts_with("HEALTHCHECK "))
        .find_map(|l| l.trim().strip_prefix("CMD "))
        .expect("a HEALTHCHECK … CMD [...] in the Dockerfile");
    let argv: Vec<String> = serde_json::from_str(command).expect("HEALTHCHECK CMD in exec (JSON) form");
    let check = |port: u16| {
        Command::new(&argv[0])
            .args(&argv[1..])
            .env("CAASIOPE_ADMIN_PORT", port.to_string())
            .stderr(std::process::Stdio::null())
            .status()
            .unwrap()
            .success()
    };
    // A one-request admin endpoint answering `status`; what it was asked.
    let serve = |status: &'static str| {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let asked = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut request = Vec::new();
            let mut buf = [0u8; 1024];
            while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = s.read(&mut buf).unwrap();
                assert!(n > 0, "the request ended early");
                request.extend_from_slice(&buf[..n]);
            }
            write!(s, "HTTP/1.1 {status}\r\ncontent-length: 3\r\nconnection: close\r\n\r\nok\n").unwrap();
            String::from_utf8(request).unwrap()
        });
        (port, asked)
    };
    let (port, asked) = serve("200 OK");
    assert!(check(port), "healthy on a 200");
    assert!(asked.join().unwrap().starts_with("GET /healthz HTTP/1.1\r\n"));
    let (port, asked) = serve("503 Service Unavailable");
    assert!(!check(port), "healthy on a 503");
    asked.join().unwrap();
    let closed = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    assert!(!check(closed), "healthy with nothing listening");
}
