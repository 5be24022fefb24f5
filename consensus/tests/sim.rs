//! Deterministic simulation of a validator network driving the real consensus core and chain.
//!
//! One seed fixes everything: the number of validators, which of them are Byzantine and how,
//! the virtual clock, every message delay, drop, duplicate and reordering, partitions that heal,
//! crashes and restarts from storage (committed ledgers plus the write-ahead log of the
//! height's inputs), and the client's transactions. Checked on every seed:
//! * agreement: no two different ledgers certified at one height, by any honest validator,
//!   decided or synced, and every certificate verifies;
//! * validity: every committed ledger re-executes to its header (so its state root) on every
//!   honest validator that commits it;
//! * evidence: every equivocation proof checks offline and accuses a Byzantine validator;
//! * progress: once the faults end, every honest validator commits further ledgers.
//!
//! `SIM_SEEDS=N` runs N seeds per size (default 250: 500 in all), `SIM_SEED=S SIM_N=n` replays
//! one; `scripts/sim --seeds N` wraps both. A failure prints the replay command.

use std::{
    cmp::Reverse,
    collections::{BTreeMap, BinaryHeap, HashMap},
};

use caasiope_consensus::{
    Chain, ChainConfig, CheckOutcome, CommittedLedger, Config, Core, Decision, Effect, Equivocation, Input,
    Message, PeerId, SignedVote, Timeout, Timeouts, Value,
};
use engine::{
    Address, Backend, Currency, Hash, SecretKey, Signature,
    genesis::{BalanceSpec, CurrencySpec, Genesis, GenesisConfig},
    ledger::{Validator, ValidatorSet},
    state::State,
    tx::{Fee, Leg, SignedTransaction, TX_VERSION, Transaction, TxId, TxSignature},
    validate::{VerifiedTx, verify},
};

const CHAIN: &str = "sim";
const GENESIS_MS: i64 = 1_767_225_600_000;
const BLOCK_INTERVAL_MS: u64 = 200;
const USERS: usize = 8;
const BACKEND: Backend = Backend::Libsecp256k1;

/// SplitMix64: tiny, seedable, and the same on every platform.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn chance(&mut self, per_mille: u64) -> bool {
        self.below(1000) < per_mille
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Behaviour {
    Honest,
    /// Signs two proposals per round it leads and two votes per vote, each to half the peers.
    Equivocator,
    /// Proposes values whose state root is wrong.
    InvalidProposer,
    /// Never sends anything.
    Silent,
}

#[derive(Clone, Debug)]
enum Net {
    Consensus(Box<Message>),
    Tx(Box<VerifiedTx>),
    Fetch(Vec<TxId>),
    Bodies(Vec<VerifiedTx>),
    LedgerRequest(u64),
    Ledger(Box<CommittedLedger>),
}

#[derive(Debug)]
enum Event {
    Deliver {
        to: usize,
        from: usize,
        msg: Net,
    },
    Timer {
        node: usize,
        incarnation: u32,
        timeout: Timeout,
    },
    StartNext {
        node: usize,
        incarnation: u32,
        height: u64,
    },
    Crash(usize),
    Restart(usize),
    Submit,
    /// The governance account re-weights an honest validator (effective at the next height).
    Govern,
}

struct Node {
    up: bool,
    incarnation: u32,
    core: Core,
    chain: Chain,
    /// Storage: survives crashes.
    ledgers: Vec<CommittedLedger>,
    wal: Vec<Input>,
    evidence: Vec<Equivocation>,
    /// Checks waiting for bodies: (height, value id, value).
    waiting: Vec<(u64, Hash, Value)>,
    /// Decided but lacking bodies to commit: waiting for the ledger from a peer.
    stuck: bool,
}

struct Sim {
    seed: u64,
    n: usize,
    rng: Rng,
    now_ms: u64,
    seq: u64,
    queue: BinaryHeap<Reverse<(u64, u64)>>,
    events: HashMap<u64, Event>,
    behaviour: Vec<Behaviour>,
    keys: Vec<SecretKey>,
    genesis: Genesis,
    nodes: Vec<Node>,
    users: Vec<(secp256k1::SecretKey, engine::PublicKey, Address)>,
    tx_counter: u64,
    faults_until_ms: u64,
    drop_per_mille: u64,
    dup_per_mille: u64,
    delay_max_ms: u64,
    partition: Option<(Vec<bool>, u64, u64)>,
    /// Height → the ledger certified there (first seen), for agreement.
    certified: BTreeMap<u64, Hash>,
    validator_sets: BTreeMap<u64, ValidatorSet>,
    equivocations_proved: u64,
    byzantine_acts: u64,
}

fn key(tag: u8, i: u64) -> SecretKey {
    let mut b = [0u8; 32];
    b[0] = tag;
    b[24..].copy_from_slice(&i.to_be_bytes());
    SecretKey::from_bytes(&b).expect("test key")
}

fn timeouts() -> Timeouts {
    Timeouts {
        propose_ms: 300,
        prevote_ms: 150,
        precommit_ms: 150,
        increase_ms: 100,
        max_ms: 3_000,
        rebroadcast_ms: 250,
    }
}

impl Sim {
    fn new(seed: u64, n: usize) -> Self {
        let mut rng = Rng(seed ^ 0x5eed_0000_0000_0000 ^ (n as u64) << 40);
        let f = (n - 1) / 3;
        let mut keys: Vec<SecretKey> = (0..n as u64).map(|i| key(7, i + 1)).collect();
        keys.sort_by_key(SecretKey::public_key);
        let users: Vec<_> = (0..USERS as u64)
            .map(|i| {
                let k = key(9, i + 1);
                let pk = k.public_key();
                (secp256k1::SecretKey::from_byte_array(&k.to_bytes()).expect("key"), pk, pk.address())
            })
            .collect();
        let config = GenesisConfig {
            chain_id: CHAIN.into(),
            timestamp_ms: GENESIS_MS,
            min_fee: 1,
            max_ttl_ms: 3_600_000,
            fee_account: users[0].2,
            governance: users[0].2,
            validators: keys.iter().map(|k| Validator { public_key: k.public_key(), weight: 1 }).collect(),
            currencies: vec![CurrencySpec { symbol: Currency::CAS, issuer: Address::timelock(0) }],
            declarations: vec![],
            balances: users
                .iter()
                .map(|u| BalanceSpec { address: u.2, currency: Currency::CAS, amount: 1_000_000_000 })
                .collect(),
        };
        let genesis = Genesis::new(config).expect("genesis");
        // Up to f Byzantine validators, each with one behaviour; sometimes none.
        let mut behaviour = vec![Behaviour::Honest; n];
        let byzantine = rng.below(f as u64 + 1) as usize;
        for _ in 0..byzantine {
            let i = rng.below(n as u64) as usize;
            behaviour[i] = match rng.below(3) {
                0 => Behaviour::Equivocator,
                1 => Behaviour::InvalidProposer,
                _ => Behaviour::Silent,
            };
        }
        let faults_until_ms = 3_000 + rng.below(6_000);
        let mut sim = Self {
            seed,
            n,
            now_ms: 0,
            seq: 0,
            queue: BinaryHeap::new(),
            events: HashMap::new(),
            behaviour,
            nodes: Vec::new(),
            users,
            tx_counter: 0,
            faults_until_ms,
            drop_per_mille: rng.below(300),
            dup_per_mille: rng.below(100),
            delay_max_ms: 5 + rng.below(300),
            partition: None,
            certified: BTreeMap::new(),
            validator_sets: BTreeMap::new(),
            equivocations_proved: 0,
            byzantine_acts: 0,
            keys,
            genesis,
            rng,
        };
        sim.validator_sets.insert(1, sim.genesis.validators.clone());
        for i in 0..n {
            let node = sim.boot(i, Vec::new(), Vec::new(), Vec::new());
            sim.nodes.push(node);
        }
        // A partition that heals before the faults end: a random side, for a random while.
        if sim.rng.chance(500) {
            let side: Vec<bool> = (0..n).map(|_| sim.rng.chance(500)).collect();
            let from = sim.rng.below(faults_until_ms / 2);
            let until = from + sim.rng.below(faults_until_ms - from);
            sim.partition = Some((side, from, until));
        }
        // Crashes of honest validators, each restarted before the faults end.
        for _ in 0..sim.rng.below(3) {
            let i = sim.rng.below(n as u64) as usize;
            let at = sim.rng.below(faults_until_ms);
            let back = at + 1 + sim.rng.below(faults_until_ms - at);
            sim.at(at, Event::Crash(i));
            sim.at(back, Event::Restart(i));
        }
        for i in 0..n {
            sim.start_node(i);
        }
        sim.at(10, Event::Submit);
        if sim.rng.chance(500) {
            let at = sim.rng.below(faults_until_ms);
            sim.at(at, Event::Govern);
        }
        sim
    }

    fn boot(
        &self,
        i: usize,
        ledgers: Vec<CommittedLedger>,
        wal: Vec<Input>,
        evidence: Vec<Equivocation>,
    ) -> Node {
        let cfg = Config {
            chain_id: CHAIN.into(),
            key: Some(self.keys[i].clone()),
            backend: BACKEND,
            timeouts: timeouts(),
        };
        let chain_cfg = ChainConfig {
            backend: BACKEND,
            block_txs_max: 50,
            pool_max: 10_000,
            drift_ms: 5_000,
            ..ChainConfig::default()
        };
        let mut chain = Chain::new(State::from_genesis(&self.genesis), chain_cfg);
        // Restart from storage: re-execute every stored ledger (certificates checked again).
        for l in &ledgers {
            if let Err(e) = chain.apply_synced(l) {
                panic!("node {i} cannot replay its own ledger: {e}");
            }
        }
        Node {
            up: true,
            incarnation: 0,
            core: Core::new(cfg),
            chain,
            ledgers,
            wal,
            evidence,
            waiting: Vec::new(),
            stuck: false,
        }
    }

    fn at(&mut self, time_ms: u64, e: Event) {
        self.seq += 1;
        self.queue.push(Reverse((time_ms, self.seq)));
        self.events.insert(self.seq, e);
    }

    fn now_ts(&self) -> i64 {
        GENESIS_MS + 1_000 + self.now_ms as i64
    }

    fn faulty(&self) -> bool {
        self.now_ms < self.faults_until_ms
    }

    fn send(&mut self, from: usize, to: usize, msg: Net) {
        if from == to {
            return;
        }
        if self.faulty() {
            if let Some((side, start, end)) = &self.partition {
                if (*start..*end).contains(&self.now_ms) && side[from] != side[to] {
                    return;
                }
            }
            if self.rng.chance(self.drop_per_mille) {
                return;
            }
            if self.rng.chance(self.dup_per_mille) {
                let d = 1 + self.rng.below(self.delay_max_ms);
                self.at(self.now_ms + d, Event::Deliver { to, from, msg: msg.clone() });
            }
            let d = 1 + self.rng.below(self.delay_max_ms);
            self.at(self.now_ms + d, Event::Deliver { to, from, msg });
        } else {
            let d = 1 + self.rng.below(20);
            self.at(self.now_ms + d, Event::Deliver { to, from, msg });
        }
    }

    fn broadcast(&mut self, from: usize, msg: &Net) {
        for to in 0..self.n {
            self.send(from, to, msg.clone());
        }
    }

    fn honest(&self, i: usize) -> bool {
        self.behaviour[i] == Behaviour::Honest
    }

    /// Feeds an input to node `i` (logging it first) and executes the effects.
    fn input(&mut self, i: usize, input: Input) {
        if !self.nodes[i].up {
            return;
        }
        // The log holds the inputs of the height being decided, from its `Start` on.
        let node = &mut self.nodes[i];
        if matches!(input, Input::Start { .. }) || node.core.height() == node.chain.next_height() {
            node.wal.push(input.clone());
        }
        let mut out = Vec::new();
        self.nodes[i].core.handle(input, &mut out);
        for e in out {
            self.effect(i, e);
        }
    }

    fn start_node(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        if node.wal.is_empty() {
            let height = node.chain.next_height();
            let validators = node.chain.validators().clone();
            self.input(i, Input::Start { height, validators });
        } else {
            // Replay the write-ahead log: the core ends where it was, signing nothing new.
            let effects = node.core.replay(node.wal.iter().cloned());
            for e in effects {
                self.effect(i, e);
            }
        }
    }

    fn effect(&mut self, i: usize, e: Effect) {
        match e {
            Effect::Broadcast(m) => self.byzantine_broadcast(i, m),
            Effect::Schedule { timeout, after_ms } => {
                let incarnation = self.nodes[i].incarnation;
                self.at(self.now_ms + after_ms, Event::Timer { node: i, incarnation, timeout });
            }
            Effect::Check { height, id, value, from } => self.check(i, height, id, value, from as usize),
            Effect::Build { height, round } => {
                let now = self.now_ts();
                let mut value = self.nodes[i].chain.build(now);
                if self.behaviour[i] == Behaviour::InvalidProposer {
                    value.header.state_root.0[0] ^= 1;
                    self.byzantine_acts += 1;
                }
                self.input(i, Input::Proposed { height, round, value });
            }
            Effect::Decide(d) => self.decide(i, d),
            Effect::Redeliver(messages) => {
                for (from, message) in messages {
                    self.input(i, Input::Message { from, message });
                }
            }
            Effect::Evidence(proof) => {
                let set = &self.validator_sets[&proof.height()];
                let key = proof
                    .check(CHAIN, set, BACKEND)
                    .unwrap_or_else(|e| self.fail(&format!("bad evidence: {e}")));
                let offender = self.keys.iter().position(|k| k.public_key() == key).expect("a validator");
                if self.honest(offender) {
                    self.fail(&format!("honest validator {offender} accused: {proof:?}"));
                }
                if !self.nodes[i].evidence.contains(&proof) {
                    self.equivocations_proved += 1;
                    self.nodes[i].evidence.push(proof);
                }
            }
            Effect::PeerBehind { peer, height } => {
                if let Some(l) = height.checked_sub(1).and_then(|h| self.nodes[i].ledgers.get(h as usize)) {
                    let l = l.clone();
                    self.send(i, peer as usize, Net::Ledger(Box::new(l)));
                }
            }
            Effect::PeerAhead { peer, .. } => {
                if !self.nodes[i].core.is_decided() || self.nodes[i].stuck {
                    let h = self.nodes[i].chain.next_height();
                    self.send(i, peer as usize, Net::LedgerRequest(h));
                }
            }
        }
    }

    fn byzantine_broadcast(&mut self, i: usize, m: Message) {
        if std::env::var("SIM_TRACE").is_ok() {
            match &m {
                Message::Proposal(p) => eprintln!(
                    "t {} node {i} PROPOSE h {} r {} vr {:?} {}",
                    self.now_ms,
                    p.proposal.height,
                    p.proposal.round,
                    p.proposal.valid_round,
                    &p.proposal.value.id(CHAIN).to_hex()[..8]
                ),
                Message::Vote(v) => eprintln!(
                    "t {} node {i} {:?} h {} r {} {:?}",
                    self.now_ms,
                    v.vote.kind,
                    v.vote.height,
                    v.vote.round,
                    v.vote.value.map(|h| h.to_hex()[..8].to_string())
                ),
            }
        }
        match self.behaviour[i] {
            Behaviour::Silent => {}
            Behaviour::Honest | Behaviour::InvalidProposer => self.broadcast(i, &Net::Consensus(Box::new(m))),
            Behaviour::Equivocator => {
                let twin = match &m {
                    Message::Proposal(p) => {
                        let mut value = p.proposal.value.clone();
                        value.header.timestamp_ms += 1;
                        let mut proposal = p.proposal.clone();
                        proposal.value = value;
                        Message::Proposal(proposal.sign(CHAIN, p.proposer, &self.keys[i]))
                    }
                    Message::Vote(v) => {
                        let mut vote = v.vote;
                        vote.value = match vote.value {
                            Some(_) => None,
                            None => Some(Hash([self.rng.next() as u8; 32])),
                        };
                        Message::Vote(SignedVote::sign(vote, CHAIN, v.validator, &self.keys[i]))
                    }
                };
                self.byzantine_acts += 1;
                for to in 0..self.n {
                    let pick = if self.rng.chance(500) { m.clone() } else { twin.clone() };
                    self.send(i, to, Net::Consensus(Box::new(pick)));
                }
            }
        }
    }

    fn check(&mut self, i: usize, height: u64, id: Hash, value: Value, from: usize) {
        let now = self.now_ts();
        let outcome = self.nodes[i].chain.check(&value, now);
        if std::env::var("SIM_TRACE").is_ok() {
            eprintln!("t {} node {i} check h {height} from {from}: {outcome:?}", self.now_ms);
        }
        match outcome {
            CheckOutcome::Valid { timely } => {
                self.input(i, Input::Checked { height, value: id, valid: true, timely })
            }
            CheckOutcome::Invalid(_) => {
                self.input(i, Input::Checked { height, value: id, valid: false, timely: false });
            }
            CheckOutcome::Missing(ids) => {
                if self.nodes[i].waiting.len() < 16 {
                    self.nodes[i].waiting.push((height, id, value));
                }
                self.send(i, from, Net::Fetch(ids));
            }
        }
    }

    fn record(&mut self, i: usize, l: &CommittedLedger) {
        let height = l.header.height;
        let id = l.header.hash(CHAIN);
        let set = &self.validator_sets[&height];
        if let Err(e) = l.certificate.verify(set, CHAIN, height, &id, BACKEND) {
            self.fail(&format!("node {i} committed ledger {height} with a bad certificate: {e}"));
        }
        match self.certified.get(&height) {
            Some(other) if *other != id => {
                self.fail(&format!("fork at height {height}: {other} and {id} (node {i})"));
            }
            _ => {
                self.certified.insert(height, id);
            }
        }
        let node = &self.nodes[i];
        assert_eq!(node.chain.state().state_root(), l.header.state_root, "seed {}: state root", self.seed);
        self.validator_sets.entry(height + 1).or_insert_with(|| node.chain.validators().clone());
    }

    fn decide(&mut self, i: usize, d: Decision) {
        let next = self.nodes[i].chain.next_height();
        if d.height < next {
            // Committed already from a peer (sync) before the core decided: the same ledger.
            let stored = self.nodes[i].ledgers[d.height as usize - 1].header.hash(CHAIN);
            if stored != d.id {
                self.fail(&format!("node {i} decided {} at {} but synced {stored}", d.id, d.height));
            }
            return;
        }
        let ledger = match self.nodes[i].chain.commit(&d.value, d.certificate) {
            Ok(c) => c.ledger,
            // A validator that restarted may have decided on a value whose bodies it lost with
            // its pool: it fetches the certified ledger from its peers.
            Err(caasiope_consensus::ChainError::Missing(_)) => {
                self.nodes[i].stuck = true;
                let msg = Net::LedgerRequest(d.height);
                self.broadcast(i, &msg);
                return;
            }
            Err(e) => self.fail(&format!("node {i} cannot commit its decision at {}: {e}", d.height)),
        };
        self.committed(i, ledger, BLOCK_INTERVAL_MS);
    }

    fn committed(&mut self, i: usize, ledger: CommittedLedger, wait_ms: u64) {
        if self.honest(i) {
            self.record(i, &ledger);
        }
        let height = ledger.header.height + 1;
        let node = &mut self.nodes[i];
        node.ledgers.push(ledger);
        node.wal.clear();
        node.waiting.clear();
        node.stuck = false;
        let incarnation = node.incarnation;
        self.at(self.now_ms + wait_ms, Event::StartNext { node: i, incarnation, height });
    }

    fn deliver(&mut self, to: usize, from: usize, msg: Net) {
        if !self.nodes[to].up || self.behaviour[to] == Behaviour::Silent {
            return;
        }
        match msg {
            Net::Consensus(message) => {
                self.input(to, Input::Message { from: from as PeerId, message: *message })
            }
            Net::Tx(vtx) => {
                let _ = self.nodes[to].chain.add(*vtx);
            }
            Net::Fetch(ids) => {
                let bodies: Vec<VerifiedTx> =
                    ids.iter().filter_map(|id| self.nodes[to].chain.pending(id).cloned()).collect();
                if !bodies.is_empty() {
                    self.send(to, from, Net::Bodies(bodies));
                }
            }
            Net::Bodies(bodies) => {
                for b in bodies {
                    let _ = self.nodes[to].chain.add(b);
                }
                let waiting = std::mem::take(&mut self.nodes[to].waiting);
                for (height, id, value) in waiting {
                    if height == self.nodes[to].chain.next_height() {
                        self.check(to, height, id, value, from);
                    }
                }
            }
            Net::LedgerRequest(height) => {
                if let Some(l) = height.checked_sub(1).and_then(|h| self.nodes[to].ledgers.get(h as usize)) {
                    let l = l.clone();
                    self.send(to, from, Net::Ledger(Box::new(l)));
                }
            }
            Net::Ledger(l) => {
                let node = &mut self.nodes[to];
                // Certified, so the one ledger of its height: taken even if the core decided.
                if l.header.height != node.chain.next_height() {
                    return;
                }
                match node.chain.apply_synced(&l) {
                    Ok(_) => self.committed(to, *l, 0),
                    // A forged or stale ledger is refused; a certified one that does not
                    // re-execute to its header would be a divergence.
                    Err(caasiope_consensus::ChainError::Mismatch { .. }) => self.fail(&format!(
                        "node {to}: certified ledger {} does not re-execute",
                        l.header.height
                    )),
                    Err(_) => {}
                }
            }
        }
    }

    fn submit(&mut self) {
        let a = self.rng.below(USERS as u64) as usize;
        let b = (a + 1 + self.rng.below(USERS as u64 - 1) as usize) % USERS;
        self.submit_transfer(a, b, vec![]);
        let next = self.now_ms + 20 + self.rng.below(100);
        self.at(next, Event::Submit);
    }

    /// Re-weights an honest validator to 2 or 3 through the governance account (user 0).
    fn govern(&mut self) {
        let honest: Vec<usize> = (0..self.n).filter(|&i| self.honest(i)).collect();
        let k = honest[self.rng.below(honest.len() as u64) as usize];
        let weight = 2 + self.rng.below(2);
        let update = engine::ValidatorUpdate { public_key: self.keys[k].public_key(), weight };
        self.submit_transfer(0, 1, vec![engine::Declaration::ValidatorUpdate(update)]);
    }

    fn submit_transfer(&mut self, a: usize, b: usize, declarations: Vec<engine::Declaration>) {
        self.tx_counter += 1;
        let c = self.tx_counter;
        let (sk, pk, from) = self.users[a];
        let tx = Transaction {
            version: TX_VERSION,
            expiration_ms: self.now_ts() + 60_000,
            declarations,
            inputs: vec![Leg { address: from, currency: Currency::CAS, amount: 10 }],
            outputs: vec![Leg { address: self.users[b].2, currency: Currency::CAS, amount: 10 }],
            message: c.to_be_bytes().to_vec(),
            fee: Fee { payer: from, amount: 1 + self.rng.below(5) as i64 },
        };
        let id = tx.id(CHAIN);
        let sig = sk.sign_ecdsa(secp256k1::Message::from_digest(id.0)).serialize_compact();
        let signed = SignedTransaction {
            tx,
            signatures: vec![TxSignature { public_key: pk, signature: Signature(sig) }],
        };
        let vtx = verify(signed, id, &self.genesis.params, BACKEND).expect("valid transfer");
        // The client hands it to one validator, which gossips it.
        let to = self.rng.below(self.n as u64) as usize;
        if self.nodes[to].up && self.nodes[to].chain.add(vtx.clone()).is_ok() {
            self.broadcast(to, &Net::Tx(Box::new(vtx)));
        }
    }

    fn fail(&self, what: &str) -> ! {
        for (i, n) in self.nodes.iter().enumerate() {
            eprintln!(
                "node {i} {:?} up {} core height {} round {} decided {} chain next {} pool {}",
                self.behaviour[i],
                n.up,
                n.core.height(),
                n.core.round(),
                n.core.is_decided(),
                n.chain.next_height(),
                n.chain.pool_len()
            );
        }
        panic!(
            "seed {} n {}: {what}\nreplay: SIM_SEED={} SIM_N={} cargo test -p caasiope-consensus --test sim -- --nocapture",
            self.seed, self.n, self.seed, self.n
        );
    }

    fn step(&mut self) -> bool {
        let Some(Reverse((t, seq))) = self.queue.pop() else { return false };
        let Some(e) = self.events.remove(&seq) else { return true };
        self.now_ms = t;
        match e {
            Event::Deliver { to, from, msg } => self.deliver(to, from, msg),
            Event::Timer { node, incarnation, timeout } => {
                if self.nodes[node].up && self.nodes[node].incarnation == incarnation {
                    self.input(node, Input::Timeout(timeout));
                }
            }
            Event::StartNext { node, incarnation, height } => {
                let n = &self.nodes[node];
                if n.up
                    && n.incarnation == incarnation
                    && n.chain.next_height() == height
                    && n.core.height() < height
                {
                    let validators = n.chain.validators().clone();
                    self.input(node, Input::Start { height, validators });
                }
            }
            Event::Crash(i) => {
                if self.nodes[i].up {
                    self.nodes[i].up = false;
                }
            }
            Event::Restart(i) => {
                if !self.nodes[i].up {
                    let old = &mut self.nodes[i];
                    let (ledgers, wal, evidence) = (
                        std::mem::take(&mut old.ledgers),
                        std::mem::take(&mut old.wal),
                        std::mem::take(&mut old.evidence),
                    );
                    let incarnation = old.incarnation + 1;
                    let mut node = self.boot(i, ledgers, Vec::new(), evidence);
                    node.incarnation = incarnation;
                    node.wal = wal;
                    self.nodes[i] = node;
                    self.start_node(i);
                }
            }
            Event::Submit => {
                if self.now_ms < self.faults_until_ms + 4_000 {
                    self.submit();
                }
            }
            Event::Govern => self.govern(),
        }
        true
    }

    fn honest_heights(&self) -> Vec<u64> {
        (0..self.n).filter(|&i| self.honest(i)).map(|i| self.nodes[i].chain.next_height() - 1).collect()
    }

    /// Runs the faulty period, then requires every honest validator to commit `more` ledgers
    /// beyond the highest height any honest one had when the faults ended.
    fn run(&mut self, more: u64, budget_ms: u64) {
        while self.now_ms < self.faults_until_ms && self.step() {}
        let target = self.honest_heights().into_iter().max().unwrap_or(0) + more;
        let deadline = self.faults_until_ms + budget_ms;
        while self.now_ms < deadline && self.honest_heights().into_iter().min().unwrap_or(0) < target {
            if !self.step() {
                break;
            }
        }
        let heights = self.honest_heights();
        if heights.iter().any(|&h| h < target) {
            self.fail(&format!(
                "no progress after the faults ended at {} ms: heights {heights:?}, target {target}, behaviours {:?}",
                self.faults_until_ms, self.behaviour
            ));
        }
    }
}

fn run_seed(seed: u64, n: usize) -> (u64, u64, u64, bool) {
    let mut sim = Sim::new(seed, n);
    sim.run(3, 60_000);
    // Every honest validator holds the same chain, and its state is the one its ledgers say.
    let honest: Vec<usize> = (0..n).filter(|&i| sim.honest(i)).collect();
    let shortest = honest.iter().map(|&i| sim.nodes[i].ledgers.len()).min().unwrap_or(0);
    for &i in &honest {
        for (h, l) in sim.nodes[i].ledgers.iter().take(shortest).enumerate() {
            assert_eq!(Some(&l.header.hash(CHAIN)), sim.certified.get(&(h as u64 + 1)), "seed {seed}");
        }
        sim.nodes[i]
            .chain
            .state()
            .check_conservation()
            .unwrap_or_else(|c| sim.fail(&format!("conservation of {c}")));
    }
    let changed = sim.validator_sets.values().any(|s| *s != sim.genesis.validators);
    (sim.certified.len() as u64, sim.equivocations_proved, sim.byzantine_acts, changed)
}

fn seeds() -> Vec<(u64, usize)> {
    if let Ok(s) = std::env::var("SIM_SEED") {
        let seed = s.parse().expect("SIM_SEED is a number");
        let n = std::env::var("SIM_N").ok().and_then(|n| n.parse().ok()).unwrap_or(4);
        return vec![(seed, n)];
    }
    let count: u64 = std::env::var("SIM_SEEDS").ok().and_then(|n| n.parse().ok()).unwrap_or(250);
    let first: u64 = std::env::var("SIM_FIRST").ok().and_then(|n| n.parse().ok()).unwrap_or(0);
    (first..first + count).flat_map(|s| [(s, 4), (s, 7)]).collect()
}

#[test]
fn simulated_networks_agree_and_progress() {
    let seeds = seeds();
    let (mut ledgers, mut proofs, mut acts, mut changes) = (0, 0, 0, 0);
    for &(seed, n) in &seeds {
        let (l, p, a, c) = run_seed(seed, n);
        ledgers += l;
        proofs += p;
        acts += a;
        changes += u64::from(c);
    }
    eprintln!(
        "sim: {} seeds, {ledgers} certified ledgers, {proofs} equivocation proofs, {acts} byzantine acts, \
         {changes} runs with a validator-set change",
        seeds.len()
    );
    assert!(changes > 0 || seeds.len() < 20, "no run changed the validator set");
    assert!(ledgers >= 3 * seeds.len() as u64);
}

#[test]
fn an_equivocating_validator_leaves_proof() {
    // A seed-independent check that the double votes of an equivocator are caught.
    let mut found = false;
    for seed in 0..40 {
        let mut sim = Sim::new(seed, 4);
        if !sim.behaviour.contains(&Behaviour::Equivocator) {
            continue;
        }
        sim.run(3, 60_000);
        if sim.equivocations_proved > 0 {
            found = true;
            break;
        }
    }
    assert!(found, "no seed with an equivocator produced a proof");
}
