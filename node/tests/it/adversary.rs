//! A Byzantine peer for tests: it takes the place of one listed validator of a localnet (its TLS
//! identity and consensus key), speaks the real peer protocol over TLS to the honest processes,
//! and lies in the ways an attack names. It also records every consensus message the honest
//! validators send it, so a test can check that none of them ever signed two different
//! messages for one (height, round, step).

use std::{
    collections::HashMap,
    net::SocketAddr,
    path::Path,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU8, AtomicU64, Ordering},
    },
    time::Duration,
};

use consensus::{
    CommittedLedger, Core, Message, PROPOSALS_PER_ROUND_MAX, Proposal, SignedVote, Slot, Value,
    message_digest,
    wire::{GOSSIP_TXS_MAX, SyncMessage, put_bodies},
};
use engine::{
    Encode, Hash, SecretKey,
    codec::decode_exact,
    genesis::Genesis,
    ledger::{ValidatorSet, Vote, VoteKind},
    tx::SignedTransaction,
};
use net::{
    Identity, NodeCert,
    conn::{ConnConfig, PeerHandle, connection},
    frame::Channel,
    secure,
    tls::{client_config, server_config},
    transport::{Transport, TransportChoice},
};

/// What the adversary does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Attack {
    /// Only listens and records.
    Quiet = 0,
    /// Answers ledger requests (and pushes the next ledgers) with certified ledgers whose
    /// transactions or certificate it altered — and votes for every proposal it sees, so the
    /// others make progress while an honest validator is down and has to catch up by sync.
    DoctoredSync,
    /// Relays every proposal it receives with its transaction ids altered.
    TamperedRelay,
    /// Signs the most distinct values a round holds (and more) for every round it leads within
    /// reach, and conflicting votes.
    ValueFlood,
    /// Floods consensus messages with bad signatures.
    JunkFlood,
    /// Floods ledger requests, body requests and old-height messages (hints).
    RequestFlood,
    /// Sends transaction bodies nobody asked for.
    UnsolicitedBodies,
    /// Gossips transactions whose signatures it broke.
    JunkGossip,
}

struct Shared {
    me: u8,
    key: SecretKey,
    set: ValidatorSet,
    chain_id: String,
    attack: AtomicU8,
    links: Mutex<HashMap<String, PeerHandle>>,
    /// Per honest signer and slot, the digests of what it sent (more than one is a double
    /// signature).
    signed: Mutex<HashMap<(u8, Slot), Vec<Hash>>>,
    /// Certified ledgers received, by height (to doctor).
    ledgers: Mutex<HashMap<u64, CommittedLedger>>,
    /// Transactions gossiped to it (for bodies).
    txs: Mutex<Vec<SignedTransaction>>,
    /// The highest height seen in a consensus message, and its latest proposal's header.
    height: AtomicU64,
    latest: Mutex<Option<Value>>,
    sent: AtomicU64,
    /// Doctored ledgers sent in answer to a request.
    doctored: AtomicU64,
    /// (height, round, kind) it voted in (as an echo of the honest ones).
    voted: Mutex<std::collections::HashSet<(u64, u32, u8)>>,
}

/// A running adversary.
pub(crate) struct Adversary {
    rt: tokio::runtime::Runtime,
    shared: Arc<Shared>,
}

impl Adversary {
    /// Takes the place of the validator configured in `config` (a localnet's `validator-N.toml`):
    /// listens on its p2p address and dials every validator peer, with its identity.
    pub(crate) fn start(config: &Path) -> Self {
        let base = config.parent().unwrap();
        let text = std::fs::read_to_string(config).unwrap();
        let cfg: toml::Value = toml::from_str(&text).unwrap();
        let node = NodeCert::load(&base.join(cfg["node_dir"].as_str().unwrap())).unwrap();
        let key_text = std::fs::read_to_string(base.join(cfg["validator_key"].as_str().unwrap())).unwrap();
        let key = SecretKey::from_hex(key_text.trim()).unwrap();
        let genesis = Genesis::from_toml(
            &std::fs::read_to_string(base.join(cfg["genesis"].as_str().unwrap())).unwrap(),
        )
        .unwrap();
        let set = genesis.validators.clone();
        let me = set.index_of(&key.public_key()).unwrap() as u8;
        let listen: SocketAddr = cfg["listen"].as_str().unwrap().parse().unwrap();
        let peers: Vec<(String, String, Identity, SocketAddr)> = cfg["peers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                (
                    p["name"].as_str().unwrap().to_owned(),
                    p["role"].as_str().unwrap().to_owned(),
                    p["identity"].as_str().unwrap().parse().unwrap(),
                    p["addr"].as_str().unwrap().parse().unwrap(),
                )
            })
            .collect();
        let shared = Arc::new(Shared {
            me,
            key,
            set,
            chain_id: genesis.params.chain_id.clone(),
            attack: AtomicU8::new(Attack::Quiet as u8),
            links: Mutex::default(),
            signed: Mutex::default(),
            ledgers: Mutex::default(),
            txs: Mutex::default(),
            height: AtomicU64::new(0),
            latest: Mutex::default(),
            sent: AtomicU64::new(0),
            doctored: AtomicU64::new(0),
            voted: Mutex::default(),
        });
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        let conn_cfg = ConnConfig::new(genesis.params.chain_id);
        let transport = Transport::start(TransportChoice::Epoll).unwrap();
        let identities: Vec<Identity> = peers.iter().map(|p| p.2).collect();
        {
            let (shared, conn_cfg, transport, peers) =
                (shared.clone(), conn_cfg.clone(), transport.clone(), peers.clone());
            let acceptor = server_config(&node, identities).unwrap();
            rt.spawn(async move {
                let listener = tokio::net::TcpListener::bind(listen).await.unwrap();
                loop {
                    let Ok((tcp, _)) = listener.accept().await else { continue };
                    let (shared, acceptor, conn_cfg, transport, peers) = (
                        shared.clone(),
                        acceptor.clone(),
                        conn_cfg.clone(),
                        transport.clone(),
                        peers.clone(),
                    );
                    tokio::spawn(async move {
                        let Ok(stream) = transport.wrap(tcp) else { return };
                        let Ok(Ok(tls)) =
                            tokio::time::timeout(Duration::from_secs(5), secure::accept(acceptor, stream))
                                .await
                        else {
                            return;
                        };
                        let Some(name) = peers.iter().find(|p| p.2 == tls.peer).map(|p| p.0.clone()) else {
                            return;
                        };
                        run_link(shared, name, conn_cfg, tls).await;
                    });
                }
            });
        }
        let me_id = node.identity();
        for (name, role, id, addr) in peers {
            // As a validator does: it dials the validators whose identity sorts above its own,
            // the others dial it (one connection per pair; a second would replace the first).
            if role != "validator" || id.0 <= me_id.0 {
                continue;
            }
            let (shared, conn_cfg, transport) = (shared.clone(), conn_cfg.clone(), transport.clone());
            let connector = client_config(&node, [id]).unwrap();
            rt.spawn(async move {
                loop {
                    let attempt = async {
                        let tcp = tokio::net::TcpStream::connect(addr).await.ok()?;
                        let stream = transport.wrap(tcp).ok()?;
                        secure::connect(connector.clone(), stream).await.ok()
                    };
                    if let Ok(Some(tls)) = tokio::time::timeout(Duration::from_secs(5), attempt).await {
                        run_link(shared.clone(), name.clone(), conn_cfg.clone(), tls).await;
                    }
                    tokio::time::sleep(Duration::from_millis(300)).await;
                }
            });
        }
        {
            let shared = shared.clone();
            rt.spawn(async move {
                loop {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    act(&shared);
                }
            });
        }
        Self { rt, shared }
    }

    pub(crate) fn set_attack(&self, attack: Attack) {
        self.shared.attack.store(attack as u8, Ordering::Relaxed);
    }

    /// Messages the adversary sent so far.
    pub(crate) fn sent(&self) -> u64 {
        self.shared.sent.load(Ordering::Relaxed)
    }

    /// Doctored ledgers sent in answer to requests.
    pub(crate) fn doctored(&self) -> u64 {
        self.shared.doctored.load(Ordering::Relaxed)
    }

    /// Certified ledgers it holds.
    pub(crate) fn ledgers(&self) -> usize {
        self.shared.ledgers.lock().unwrap().len()
    }

    /// Honest peers connected now.
    pub(crate) fn links(&self) -> usize {
        self.shared.links.lock().unwrap().len()
    }

    /// The (signer, slot)s at which an honest validator sent two different messages.
    pub(crate) fn double_signatures(&self) -> Vec<(u8, Slot)> {
        let signed = self.shared.signed.lock().unwrap();
        signed.iter().filter(|(_, d)| d.len() > 1).map(|(k, _)| *k).collect()
    }

    /// Consensus messages of honest validators recorded (distinct).
    pub(crate) fn recorded(&self) -> usize {
        self.shared.signed.lock().unwrap().len()
    }
}

impl Drop for Adversary {
    fn drop(&mut self) {
        self.shared.links.lock().unwrap().clear();
        let rt =
            std::mem::replace(&mut self.rt, tokio::runtime::Builder::new_current_thread().build().unwrap());
        rt.shutdown_timeout(Duration::from_secs(1));
    }
}

fn attack(shared: &Shared) -> Attack {
    match shared.attack.load(Ordering::Relaxed) {
        1 => Attack::DoctoredSync,
        2 => Attack::TamperedRelay,
        3 => Attack::ValueFlood,
        4 => Attack::JunkFlood,
        5 => Attack::RequestFlood,
        6 => Attack::UnsolicitedBodies,
        7 => Attack::JunkGossip,
        _ => Attack::Quiet,
    }
}

fn broadcast(shared: &Shared, channel: Channel, payload: &[u8]) {
    for handle in shared.links.lock().unwrap().values() {
        if handle.send(channel, payload.to_vec()).is_ok() {
            shared.sent.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// A certified ledger with its content altered in one of three ways.
fn doctor(mut l: CommittedLedger, k: u64) -> CommittedLedger {
    match k % 3 {
        0 if !l.transactions.is_empty() => {
            l.transactions.pop();
        }
        1 if !l.transactions.is_empty() => l.transactions[0].signatures[0].signature.0[7] ^= 1,
        _ => {
            if let Some(s) = l.certificate.signatures.first_mut() {
                s.1.0[9] ^= 1;
            }
        }
    }
    l
}

async fn run_link<S>(shared: Arc<Shared>, name: String, cfg: ConnConfig, tls: secure::Secure<S>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (handle, inbound, driver) = connection(cfg);
    shared.links.lock().unwrap().insert(name.clone(), handle.clone());
    let net::conn::Inbound { channels } = inbound;
    for (channel, mut rx) in Channel::ALL.into_iter().zip(channels) {
        let (shared, handle) = (shared.clone(), handle.clone());
        tokio::spawn(async move {
            while let Some(payload) = rx.recv().await {
                inbound_frame(&shared, &handle, channel, &payload);
            }
        });
    }
    let _ = driver.run(tls).await;
    shared.links.lock().unwrap().remove(&name);
}

fn inbound_frame(shared: &Shared, handle: &PeerHandle, channel: Channel, payload: &[u8]) {
    match channel {
        Channel::Consensus => {
            let Ok(m) = decode_exact::<Message>(payload) else { return };
            if m.signer() != shared.me {
                let mut signed = shared.signed.lock().unwrap();
                let digests = signed.entry((m.signer(), Slot::of(&m))).or_default();
                let d = message_digest(&m);
                if !digests.contains(&d) {
                    digests.push(d);
                }
            }
            shared.height.fetch_max(m.height(), Ordering::Relaxed);
            // While it serves doctored ledgers it votes as the first honest vote it sees of each
            // (height, round, kind) says, so the others go on without a validator that is down.
            if let (Message::Vote(v), Attack::DoctoredSync) = (&m, attack(shared)) {
                let slot = (v.vote.height, v.vote.round, v.vote.kind as u8);
                if v.validator != shared.me && shared.voted.lock().unwrap().insert(slot) {
                    let signed = SignedVote::sign(v.vote, &shared.chain_id, shared.me, &shared.key);
                    broadcast(shared, Channel::Consensus, &Message::Vote(signed).to_bytes());
                }
            }
            if let Message::Proposal(p) = &m {
                *shared.latest.lock().unwrap() = Some(p.proposal.value.clone());

                if attack(shared) == Attack::TamperedRelay {
                    let mut copy = p.clone();
                    copy.proposal.value.tx_ids.push(Hash([0xab; 32]));
                    broadcast(shared, Channel::Consensus, &Message::Proposal(copy).to_bytes());
                }
            }
        }
        Channel::Gossip => {
            let Ok(bodies) =
                consensus::wire::decode_txs(&mut engine::codec::Reader::new(payload), GOSSIP_TXS_MAX)
            else {
                return;
            };
            let mut txs = shared.txs.lock().unwrap();
            for b in bodies {
                if txs.len() < 10_000 {
                    if let Ok(tx) = SignedTransaction::from_bytes(&b) {
                        txs.push(tx);
                    }
                }
            }
        }
        Channel::Sync => match SyncMessage::decode(payload) {
            Ok(SyncMessage::Ledger(l)) => {
                shared.ledgers.lock().unwrap().insert(l.header.height, *l);
            }
            Ok(SyncMessage::LedgerRequest(h)) if attack(shared) == Attack::DoctoredSync => {
                let l = shared.ledgers.lock().unwrap().get(&h).cloned();
                if let Some(l) = l {
                    let bytes = SyncMessage::Ledger(Box::new(doctor(l, h))).encode();
                    if handle.send(Channel::Sync, bytes).is_ok() {
                        shared.sent.fetch_add(1, Ordering::Relaxed);
                        shared.doctored.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            _ => {}
        },
        Channel::Control => {}
    }
}

/// One step of the attack in force (every 50 ms).
fn act(shared: &Shared) {
    let height = shared.height.load(Ordering::Relaxed);
    // Whatever the attack, it keeps every certified ledger it can get (asked of the honest
    // ones), so that it can doctor any of them.
    let missing: Vec<u64> = {
        let ledgers = shared.ledgers.lock().unwrap();
        (1..height).filter(|h| !ledgers.contains_key(h)).take(8).collect()
    };
    for h in missing {
        broadcast(shared, Channel::Sync, &SyncMessage::LedgerRequest(h).encode());
    }
    match attack(shared) {
        Attack::Quiet | Attack::TamperedRelay => {}
        Attack::DoctoredSync => {
            // Push doctored ledgers of every height it holds, now and then: a process catching
            // up takes whichever is its next.
            if shared.sent.load(Ordering::Relaxed) % 10 == 0 {
                let known: Vec<CommittedLedger> = shared.ledgers.lock().unwrap().values().cloned().collect();
                for l in known {
                    let h = l.header.height;
                    broadcast(shared, Channel::Sync, &SyncMessage::Ledger(Box::new(doctor(l, h))).encode());
                }
            }
            shared.sent.fetch_add(1, Ordering::Relaxed);
        }
        Attack::ValueFlood => {
            let Some(value) = shared.latest.lock().unwrap().clone() else { return };
            if height == 0 {
                return;
            }
            for round in 0..8u32 {
                if Core::proposer(&shared.set, height, round) != shared.me {
                    continue;
                }
                for k in 0..(PROPOSALS_PER_ROUND_MAX as i64 + 2) {
                    let mut v = value.clone();
                    v.header.height = height;
                    v.header.timestamp_ms += 1 + k;
                    let p = Proposal { height, round, valid_round: None, value: v };
                    let signed = p.sign(&shared.chain_id, shared.me, &shared.key);
                    broadcast(shared, Channel::Consensus, &Message::Proposal(signed).to_bytes());
                }
            }
            // Conflicting votes too: a nil and a value prevote in round 0.
            for value in [None, Some(Hash([0x5a; 32]))] {
                let vote = Vote { kind: VoteKind::Prevote, height, round: 0, value };
                let signed = SignedVote::sign(vote, &shared.chain_id, shared.me, &shared.key);
                broadcast(shared, Channel::Consensus, &Message::Vote(signed).to_bytes());
            }
        }
        Attack::JunkFlood => {
            for r in 0..200u32 {
                let vote = Vote { kind: VoteKind::Precommit, height, round: r % 8, value: None };
                let mut signed = SignedVote::sign(vote, &shared.chain_id, shared.me, &shared.key);
                signed.signature.0[0] ^= 1;
                broadcast(shared, Channel::Consensus, &Message::Vote(signed).to_bytes());
            }
        }
        Attack::RequestFlood => {
            for h in 1..height.min(64) {
                broadcast(shared, Channel::Sync, &SyncMessage::LedgerRequest(h).encode());
            }
            let ids: Vec<Hash> = (0..4096u32)
                .map(|i| Hash(engine::hash::keyed(engine::hash::Domain::TxId, &i.to_le_bytes()).0))
                .collect();
            broadcast(shared, Channel::Sync, &SyncMessage::Fetch(ids).encode());
            // Old-height messages: each is a hint that this peer is behind.
            for h in 1..height.min(32) {
                let vote = Vote { kind: VoteKind::Prevote, height: h, round: 0, value: None };
                let signed = SignedVote::sign(vote, &shared.chain_id, shared.me, &shared.key);
                broadcast(shared, Channel::Consensus, &Message::Vote(signed).to_bytes());
            }
        }
        Attack::JunkGossip => {
            let txs: Vec<SignedTransaction> =
                shared.txs.lock().unwrap().iter().take(GOSSIP_TXS_MAX).cloned().collect();
            let broken: Vec<SignedTransaction> = txs
                .into_iter()
                .map(|mut tx| {
                    tx.signatures[0].signature.0[11] ^= 1;
                    tx
                })
                .collect();
            if !broken.is_empty() {
                broadcast(shared, Channel::Gossip, &consensus::wire::encode_txs(&broken));
            }
        }
        Attack::UnsolicitedBodies => {
            let txs: Vec<Vec<u8>> =
                shared.txs.lock().unwrap().iter().take(GOSSIP_TXS_MAX).map(Encode::to_bytes).collect();
            let junk: Vec<Vec<u8>> = (0..GOSSIP_TXS_MAX as u8).map(|i| vec![i; 200]).collect();
            for bodies in [txs, junk] {
                if bodies.is_empty() {
                    continue;
                }
                let mut out = vec![3u8];
                put_bodies(bodies.iter().map(Vec::as_slice), &mut out);
                broadcast(shared, Channel::Sync, &out);
            }
        }
    }
}
