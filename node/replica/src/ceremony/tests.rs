use std::os::unix::fs::PermissionsExt;

use super::*;
use crate::config::NodeConfig;

fn args(role: Role, i: u16) -> MemberArgs {
    MemberArgs {
        name: None,
        role,
        advertise: SocketAddr::from(([127, 0, 0, 1], 27_000 + i)),
        governance_address: None,
        listen: None,
        submit_listen: SocketAddr::from(([127, 0, 0, 1], 27_100 + i)),
        admin_listen: SocketAddr::from(([127, 0, 0, 1], 27_200 + i)),
        api_listen: None,
    }
}

/// Four members (three validators, an explorer) each in its own directory under `root`.
fn members(root: &Path) -> Vec<PathBuf> {
    let roles = [Role::Validator, Role::Validator, Role::Validator, Role::Explorer];
    roles
        .iter()
        .enumerate()
        .map(|(i, &role)| {
            let dir = root.join(format!("member-{i}"));
            init_member(&dir, 30, &args(role, i as u16)).unwrap();
            dir
        })
        .collect()
}

fn genesis_args(dirs: &[PathBuf], out: &Path) -> GenesisArgs {
    GenesisArgs {
        chain_id: "consortium".into(),
        members: dirs.iter().map(|d| d.join(MEMBER_FILE)).collect(),
        governance_required: None,
        governance: None,
        currencies: vec![],
        balances: vec![],
        block_interval_ms: 1000,
        min_fee: 1_000,
        max_ttl_ms: 3_600_000,
        out: out.to_owned(),
    }
}

fn json(output: Output) -> serde_json::Value {
    match output {
        Output::Json(text) => serde_json::from_str(&text).unwrap(),
        other => panic!("not JSON: {other:?}"),
    }
}

#[test]
fn a_member_publishes_no_secret_and_keeps_its_secrets_private() {
    let root = tempfile::tempdir().unwrap();
    let dirs = members(root.path());
    for (i, dir) in dirs.iter().enumerate() {
        let public = fs::read_to_string(dir.join(MEMBER_FILE)).unwrap();
        let member = Member::load(&dir.join(MEMBER_FILE)).unwrap();
        assert_eq!(member.name, format!("member-{i}"), "named after its directory");
        let mut secrets = vec![net::identity::KEY_FILE, GOVERNANCE_KEY_FILE];
        if member.role == Role::Validator {
            secrets.push(VALIDATOR_KEY_FILE);
        }
        for secret in secrets {
            let path = dir.join(secret);
            assert_eq!(fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600, "{secret}");
            let text = fs::read_to_string(&path).unwrap();
            // The key's hex (or the PEM's base64 body) appears nowhere in the public file.
            for line in text.lines().filter(|l| l.len() >= 32 && !l.starts_with("-----")) {
                assert!(!public.contains(line.trim()), "{secret} leaked into member.json");
            }
        }
        assert!(!dir.join(VALIDATOR_KEY_FILE).exists() || member.role == Role::Validator);
        // Never twice.
        let again = init_member(dir, 30, &args(member.role, i as u16));
        assert!(again.unwrap_err().to_string().contains("already exists"));
    }
}

#[test]
fn genesis_new_writes_a_config_each_member_loads_and_a_hash_inspect_agrees_on() {
    let root = tempfile::tempdir().unwrap();
    let dirs = members(root.path());
    let out = root.path().join("coordinator");
    let report = json(genesis_new(&genesis_args(&dirs, &out)).unwrap());
    assert_eq!(report["validators"], 3);
    assert_eq!(report["governance_required"], 3, "more than two thirds of four");
    let inspected = json(genesis_inspect(&out.join("genesis.toml")).unwrap());
    assert_eq!(inspected["genesis_hash"], report["genesis_hash"]);
    assert_eq!(inspected["genesis_file_hash"], report["genesis_file_hash"]);
    // A coordinator handing one member a file that differs in a parameter alone: the genesis
    // ledger's hash is the same, the file hash tells.
    let text = std::fs::read_to_string(out.join("genesis.toml")).unwrap();
    let other = root.path().join("other.toml");
    let min_fee = text.lines().find(|l| l.starts_with("min_fee = ")).unwrap();
    std::fs::write(&other, text.replace(min_fee, "min_fee = 123457")).unwrap();
    let lied = json(genesis_inspect(&other).unwrap());
    assert_eq!(lied["genesis_hash"], report["genesis_hash"]);
    assert_ne!(lied["genesis_file_hash"], report["genesis_file_hash"]);
    assert_eq!(inspected["governance"], report["governance"]);
    assert_eq!(inspected["declarations"][0]["required"], 3);
    assert_eq!(inspected["declarations"][0]["signers"].as_array().unwrap().len(), 4);
    for (i, dir) in dirs.iter().enumerate() {
        // The member copies the genesis and its config into its own directory.
        let name = format!("member-{i}");
        fs::copy(out.join("genesis.toml"), dir.join("genesis.toml")).unwrap();
        fs::copy(out.join(format!("{name}.toml")), dir.join("config.toml")).unwrap();
        let config = NodeConfig::load(&dir.join("config.toml")).unwrap();
        let net = config.net.unwrap();
        assert_eq!(net.node_dir, dir.join("."));
        assert_eq!(config.genesis, dir.join("genesis.toml"));
        assert_eq!(config.validator_key.is_some(), i < 3);
        assert_eq!(config.api_listen.is_some(), i == 3);
        assert_eq!(net.listen, Some(SocketAddr::from(([0, 0, 0, 0], 27_000 + i as u16))));
        let peers: Vec<&str> = net.peers.iter().map(|(p, _)| p.name.as_str()).collect();
        let expected: Vec<String> =
            (0..4).filter(|&j| j != i && (i < 3 || j < 3)).map(|j| format!("member-{j}")).collect();
        assert_eq!(peers, expected, "a validator lists every member, the explorer the validators");
        for (peer, identity) in &net.peers {
            let j: usize = peer.name["member-".len()..].parse().unwrap();
            let member = Member::load(&dirs[j].join(MEMBER_FILE)).unwrap();
            assert_eq!(
                (identity.to_string(), peer.addr, peer.role),
                (member.identity, member.advertise, member.role)
            );
        }
    }
    // Nothing is overwritten.
    let again = genesis_new(&genesis_args(&dirs, &out)).unwrap_err().to_string();
    assert!(again.contains("already exists"), "{again}");
}

#[test]
fn genesis_new_refuses_members_that_clash_or_lie() {
    let root = tempfile::tempdir().unwrap();
    let dirs = members(root.path());
    let out = root.path().join("out");
    let refuse = |args: GenesisArgs| format!("{:#}", genesis_new(&args).unwrap_err());
    // The same member twice.
    let mut twice = genesis_args(&dirs, &out);
    twice.members.push(twice.members[0].clone());
    assert!(refuse(twice).contains("share a name"));
    // A file edited to claim another's identity under a new name.
    let mut forged = Member::load(&dirs[1].join(MEMBER_FILE)).unwrap();
    forged.name = "forger".into();
    forged.validator_public_key = Member::load(&dirs[0].join(MEMBER_FILE)).unwrap().validator_public_key;
    forged.advertise = SocketAddr::from(([127, 0, 0, 1], 1));
    let path = root.path().join("forged.json");
    fs::write(&path, serde_json::to_string(&forged).unwrap()).unwrap();
    let mut args = genesis_args(&dirs, &out);
    args.members.push(path.clone());
    assert!(refuse(args).contains("share a TLS identity"));
    // A name that would write outside the output directory.
    let mut escape = Member::load(&dirs[2].join(MEMBER_FILE)).unwrap();
    escape.name = "../escape".into();
    fs::write(&path, serde_json::to_string(&escape).unwrap()).unwrap();
    let mut args = genesis_args(&dirs[..2], &out);
    args.members.push(path.clone());
    assert!(refuse(args).contains("member name"));
    // A node claiming a validator key, an unknown field, more signatures than members.
    let mut node = Member::load(&dirs[3].join(MEMBER_FILE)).unwrap();
    node.role = Role::Node;
    node.api_listen = None;
    node.validator_public_key = Member::load(&dirs[0].join(MEMBER_FILE)).unwrap().validator_public_key;
    fs::write(&path, serde_json::to_string(&node).unwrap()).unwrap();
    let mut args = genesis_args(&dirs[..3], &out);
    args.members.push(path.clone());
    assert!(refuse(args).contains("only a validator"));
    let mut extra = serde_json::to_value(Member::load(&dirs[0].join(MEMBER_FILE)).unwrap()).unwrap();
    extra["secret"] = "x".into();
    fs::write(&path, extra.to_string()).unwrap();
    assert!(
        refuse(GenesisArgs { members: vec![path], ..genesis_args(&dirs, &out) })
            .contains("unknown field `secret`")
    );
    let mut args = genesis_args(&dirs, &out);
    args.governance_required = Some(5);
    assert!(refuse(args).contains("--governance-required must be 1 to 4"));
    // No validator at all.
    assert!(refuse(genesis_args(&dirs[3..], &out)).contains("validators, not 0"));
    assert!(!out.join("genesis.toml").exists(), "nothing written by a refused ceremony");
}
