//! The gossip and sync payloads are `consensus::wire`'s; what ties them to this transport is
//! here: a ledger of the largest block must fit one frame.

pub(crate) use consensus::wire::{
    FETCH_IDS_MAX, GOSSIP_TXS_MAX, SyncMessage as Sync, decode_txs, encode_txs, ledger_request,
    snapshot_request,
};

#[cfg(test)]
mod tests {
    use consensus::{CommittedLedger, wire::SyncMessage};
    use engine::{Encode, codec::decode_exact, tx::SignedTransaction};

    #[test]
    fn a_ledger_of_the_largest_block_fits_one_sync_frame() {
        // A ledger's encoding is its header, certificate and count, then its transactions'
        // encodings back to back: with the largest certificate, what is left of a frame must
        // hold a block's bytes.
        let w = bench::workload::workload(2, 2);
        let header = *engine::state::State::from_genesis(&w.genesis).head();
        let certificate = engine::ledger::Certificate {
            round: u32::MAX,
            signatures: (0..engine::limits::VALIDATORS_MAX)
                .map(|i| (i as u8, engine::Signature([0xff; 64])))
                .collect(),
        };
        let tx: SignedTransaction = decode_exact(&bench::workload::transfer_bytes(&w, 0, 2, 60_000)).unwrap();
        let ledger = |n: usize| {
            SyncMessage::Ledger(Box::new(CommittedLedger {
                header,
                certificate: certificate.clone(),
                transactions: vec![tx.clone(); n],
            }))
            .encode()
            .len()
        };
        let overhead = ledger(0);
        assert_eq!(ledger(3), overhead + 3 * tx.to_bytes().len(), "transactions add only their bytes");
        assert!(
            overhead <= limits::LEDGER_OVERHEAD_MAX_BYTES,
            "{overhead} > {}",
            limits::LEDGER_OVERHEAD_MAX_BYTES
        );
    }
}
