//! Sealed gossip: every chitchat datagram is authenticated with the cluster
//! secret, and checked for freshness, before a byte of it is parsed.
//!
//! chitchat hands its transport typed envelopes. [`SealedTransport`] encodes
//! each one with chitchat's own codec (made public by the patch in
//! `third_party/chitchat`), seals it and sends it; on receipt it checks the
//! seal, the sender's clock and the sender's sequence, and only then decodes
//! the envelope. A datagram that fails is dropped, counted by [`DropReason`]
//! (exported as `sessionmesh_gossip_dropped_total{reason}`) and logged at
//! debug, with one warning per reason a minute at most. Nothing is buffered
//! across datagrams: a datagram is read into one buffer, and authenticated or
//! forgotten before the next one.
//!
//! # Wire format
//!
//! ```text
//! offset  size  field
//!      0     1  format version: 1 (plain chitchat begins with 0x53)
//!      1     4  key id: HMAC-SHA256(gossip key, "sessionmesh gossip key id")[..4]
//!      5     8  sender: random for each gossip socket (each start of a node), big endian
//!     13     8  sequence: the sender's clock, microseconds since the Unix epoch,
//!               strictly increasing per sender, big endian
//!     21     n  the chitchat envelope, as chitchat encodes it (not encrypted)
//!   21+n    32  HMAC-SHA256(gossip key, bytes 0 .. 21+n)
//! ```
//!
//! 53 bytes of seal per datagram; chitchat leaves
//! [`chitchat::TRANSPORT_OVERHEAD_LEN`] (64) bytes of each datagram for it.
//!
//! # Keys
//!
//! The gossip key is HMAC-SHA256(secret, "sessionmesh gossip key\n"), derived
//! rather than the secret itself, so that the raw secret keys only the internal
//! listener's signatures ([`crate::auth`]), whose inputs never begin with that
//! label. There is one key per accepted secret: `cluster_secret` seals every
//! datagram this node sends; a datagram sealed with it or with one of
//! `cluster_previous_secrets` is accepted (the key id picks the key, so a
//! rotation costs no extra MAC). A rotation therefore installs the new secret
//! everywhere (as a previous secret) before any node seals with it.
//!
//! # Replays
//!
//! Checked after the MAC, so that only authentic datagrams touch this state:
//! - the sequence, a timestamp, must lie within [`MAX_SKEW`] (30 s, as for
//!   internal requests) of the receiver's clock: a datagram captured longer ago
//!   is refused by every node, even one that just started and never heard of its
//!   sender. Node clocks must agree within that bound;
//! - per sender, the sequence must be higher than the last one accepted: a
//!   datagram replayed to a node that has heard from its sender since (in a
//!   running cluster, within a gossip round) is refused.
//!
//! That is a strict order rather than a sliding window (IPsec's, WireGuard's)
//! on purpose: the key is the whole cluster's, not one pair's, so a sender's
//! sequence numbers are spread over all its peers, and a window would let a
//! datagram captured on its way to one node in at another as long as the window
//! spans it. Gossip loses nothing by the strictness: on a network that reorders
//! datagrams the late one counts as `replayed`, like a lost one, and the next
//! round makes up for it. What remains possible is to send a datagram captured
//! less than [`MAX_SKEW`] ago to a node that has heard nothing newer from its
//! sender: it is accepted once, like a late duplicate of a datagram, which
//! chitchat tolerates (versions and heartbeats only grow). Memory: one entry
//! per sender heard from within [`MAX_SKEW`], at most [`MAX_SENDERS`].

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use async_trait::async_trait;
use chitchat::transport::{RecvOutcome, SendOutcome, Socket, Transport};
use chitchat::ChitchatEnvelope;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::auth::Signer;

/// The seal's format version (byte 0).
pub const VERSION: u8 = 1;
/// Bytes before the envelope: version, key id, sender, sequence.
pub const HEADER_LEN: usize = 1 + KEY_ID_LEN + 8 + 8;
/// Bytes of MAC after the envelope.
pub const TAG_LEN: usize = 32;
/// Bytes the seal adds to an envelope.
pub const SEAL_LEN: usize = HEADER_LEN + TAG_LEN;
const KEY_ID_LEN: usize = 4;
const _: () = assert!(SEAL_LEN <= chitchat::TRANSPORT_OVERHEAD_LEN);

/// Largest difference accepted between a sequence (the sender's clock) and the
/// receiver's clock.
pub const MAX_SKEW: Duration = Duration::from_millis(crate::auth::MAX_SKEW_MS);
const MAX_SKEW_MICROS: u64 = MAX_SKEW.as_micros() as u64;
/// Most senders whose last sequence a node remembers (only holders of the
/// secret create entries; a cluster has one sender per node start).
pub const MAX_SENDERS: usize = 4096;

/// Label of the gossip key's derivation from a cluster secret.
const KEY_LABEL: &[u8] = b"sessionmesh gossip key";
/// Label of a key's id.
const KEY_ID_LABEL: &[u8] = b"sessionmesh gossip key id";
/// The first byte of every plain chitchat datagram (its magic number, 45139, little endian).
const CHITCHAT_MAGIC_FIRST: u8 = 0x53;
/// Largest UDP payload (IPv6 without jumbograms); a longer datagram is cut to it
/// by the kernel and then fails its MAC.
const RECV_BUFFER_LEN: usize = 65_536;
/// At most one warning per drop reason in this interval; the rest go to debug.
const WARN_INTERVAL: Duration = Duration::from_secs(60);

/// Why a datagram was dropped: the `reason` label of `sessionmesh_gossip_dropped_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DropReason {
    /// Shorter than a seal, or an unknown format version.
    Malformed,
    /// Plain chitchat: a node without sealed gossip (an older sessionmesh) or
    /// a stranger with the chitchat crate.
    Unsealed,
    /// A key id of none of this node's secrets: a node with another cluster
    /// secret (or one that seals with a new secret not yet installed here).
    UnknownKey,
    /// A known key id with a wrong MAC: changed on the way, or forged.
    BadMac,
    /// The sequence is more than `MAX_SKEW` from this node's clock: captured
    /// long ago, or the clocks disagree.
    Stale,
    /// Not newer than the last datagram accepted from its sender.
    Replayed,
    /// Authentic, but chitchat cannot decode the envelope (another version).
    Undecodable,
}

impl DropReason {
    /// Every reason, in the order they are exported.
    pub const ALL: [DropReason; 7] = [
        DropReason::Malformed,
        DropReason::Unsealed,
        DropReason::UnknownKey,
        DropReason::BadMac,
        DropReason::Stale,
        DropReason::Replayed,
        DropReason::Undecodable,
    ];

    /// The metric label of the reason.
    pub fn label(self) -> &'static str {
        match self {
            DropReason::Malformed => "malformed",
            DropReason::Unsealed => "unsealed",
            DropReason::UnknownKey => "unknown_key",
            DropReason::BadMac => "bad_mac",
            DropReason::Stale => "stale",
            DropReason::Replayed => "replayed",
            DropReason::Undecodable => "undecodable",
        }
    }

    fn explain(self) -> &'static str {
        match self {
            DropReason::Malformed => "not a sealed gossip datagram",
            DropReason::Unsealed => {
                "plain chitchat: a node without sealed gossip (an older sessionmesh?) or a stranger"
            }
            DropReason::UnknownKey => {
                "sealed with a secret this node does not accept: another cluster_secret?"
            }
            DropReason::BadMac => "wrong MAC: changed on the way, or forged",
            DropReason::Stale => {
                "the sender's clock is more than 30 s from ours: an old capture, or clocks apart"
            }
            DropReason::Replayed => "not newer than the sender's last datagram: a replay",
            DropReason::Undecodable => "authentic, but chitchat cannot decode it",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Datagrams dropped by one node's gossip socket, by reason (monotonic).
#[derive(Debug, Default)]
pub struct GossipDrops {
    counts: [AtomicU64; DropReason::ALL.len()],
}

impl GossipDrops {
    fn count(&self, reason: DropReason) {
        self.counts[reason.index()].fetch_add(1, Ordering::Relaxed);
    }

    /// Datagrams dropped for `reason` so far.
    pub fn get(&self, reason: DropReason) -> u64 {
        self.counts[reason.index()].load(Ordering::Relaxed)
    }
}

/// The gossip keys of one node, derived from its cluster secrets.
#[derive(Clone)]
pub struct GossipKeys {
    /// The sealing key first, then the other accepted ones.
    keys: Arc<[GossipKey]>,
}

struct GossipKey {
    id: [u8; KEY_ID_LEN],
    keyed: Hmac<Sha256>,
}

impl std::fmt::Debug for GossipKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "GossipKeys({} keys, ***)", self.keys.len())
    }
}

/// A datagram whose seal checked out: who sent it, when, and the envelope's bytes.
#[derive(Debug, PartialEq, Eq)]
pub struct Opened<'a> {
    pub sender: u64,
    pub sequence: u64,
    pub payload: &'a [u8],
}

impl GossipKeys {
    /// One key per secret `signer` accepts; the one it signs with seals.
    pub fn new(signer: &Signer) -> GossipKeys {
        let mut derived = signer.derive_keys(KEY_LABEL);
        // The same secret listed twice is one key.
        let mut seen = Vec::new();
        derived.retain(|key| {
            let new = !seen.contains(key);
            seen.push(*key);
            new
        });
        let keys = derived
            .iter()
            .map(|key| {
                let keyed = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes 32-byte keys");
                let mut id_mac = keyed.clone();
                id_mac.update(KEY_ID_LABEL);
                let mut id = [0u8; KEY_ID_LEN];
                id.copy_from_slice(&id_mac.finalize().into_bytes()[..KEY_ID_LEN]);
                GossipKey { id, keyed }
            })
            .collect();
        GossipKeys { keys }
    }

    fn sealing(&self) -> &GossipKey {
        &self.keys[0]
    }

    /// Appends to `out` the sealed datagram whose envelope `write` appends.
    pub fn seal(
        &self,
        sender: u64,
        sequence: u64,
        out: &mut Vec<u8>,
        write: impl FnOnce(&mut Vec<u8>),
    ) {
        let start = out.len();
        let key = self.sealing();
        out.push(VERSION);
        out.extend_from_slice(&key.id);
        out.extend_from_slice(&sender.to_be_bytes());
        out.extend_from_slice(&sequence.to_be_bytes());
        write(out);
        let mut mac = key.keyed.clone();
        mac.update(&out[start..]);
        out.extend_from_slice(&mac.finalize().into_bytes());
    }

    /// Checks a datagram's format and MAC (not its freshness: see [`Replays`]).
    pub fn open<'a>(&self, datagram: &'a [u8]) -> Result<Opened<'a>, DropReason> {
        if datagram.first() == Some(&CHITCHAT_MAGIC_FIRST) {
            return Err(DropReason::Unsealed);
        }
        if datagram.len() < SEAL_LEN || datagram[0] != VERSION {
            return Err(DropReason::Malformed);
        }
        let (sealed, tag) = datagram.split_at(datagram.len() - TAG_LEN);
        let id = &sealed[1..1 + KEY_ID_LEN];
        let mut known = false;
        let mut authentic = false;
        for key in self.keys.iter().filter(|key| key.id == id) {
            known = true;
            let mut mac = key.keyed.clone();
            mac.update(sealed);
            if mac.verify_slice(tag).is_ok() {
                authentic = true;
                break;
            }
        }
        match (known, authentic) {
            (false, _) => return Err(DropReason::UnknownKey),
            (true, false) => return Err(DropReason::BadMac),
            (true, true) => {}
        }
        let word = |at: usize| {
            let mut bytes = [0u8; 8];
            bytes.copy_from_slice(&sealed[at..at + 8]);
            u64::from_be_bytes(bytes)
        };
        Ok(Opened {
            sender: word(1 + KEY_ID_LEN),
            sequence: word(1 + KEY_ID_LEN + 8),
            payload: &sealed[HEADER_LEN..],
        })
    }
}

/// The freshness check of authentic datagrams: the sequence within
/// [`MAX_SKEW`] of this node's clock, and above the sender's last one.
#[derive(Debug, Default)]
pub struct Replays {
    /// Last sequence accepted per sender.
    last: std::collections::HashMap<u64, u64>,
    /// The latest clock reading seen: the clock as this check sees it never
    /// goes back, so that pruned senders cannot come back into the window.
    now: u64,
    /// When entries out of the window were last pruned.
    pruned_at: u64,
}

impl Replays {
    /// Accepts `sequence` from `sender` at `clock` (microseconds since the
    /// epoch), or says why not. Only an accepted datagram changes the state.
    pub fn check(&mut self, sender: u64, sequence: u64, clock: u64) -> Result<(), DropReason> {
        self.now = self.now.max(clock);
        if sequence.abs_diff(self.now) > MAX_SKEW_MICROS {
            return Err(DropReason::Stale);
        }
        if self.last.get(&sender).is_some_and(|&last| sequence <= last) {
            return Err(DropReason::Replayed);
        }
        self.prune();
        self.last.insert(sender, sequence);
        Ok(())
    }

    /// Forgets senders whose last sequence is out of the window (anything not
    /// newer than it is stale anyway), once per window; past [`MAX_SENDERS`],
    /// the sender heard from longest ago.
    fn prune(&mut self) {
        let due = self.now.saturating_sub(self.pruned_at) >= MAX_SKEW_MICROS;
        if !due && self.last.len() < MAX_SENDERS {
            return;
        }
        let horizon = self.now.saturating_sub(MAX_SKEW_MICROS);
        self.last.retain(|_, last| *last >= horizon);
        self.pruned_at = self.now;
        while self.last.len() >= MAX_SENDERS {
            let Some(oldest) = self.last.iter().min_by_key(|(_, last)| **last) else {
                break;
            };
            let oldest = *oldest.0;
            self.last.remove(&oldest);
        }
    }

    /// Senders remembered.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.last.len()
    }

    #[cfg(test)]
    fn is_empty(&self) -> bool {
        self.last.is_empty()
    }
}

/// Microseconds since the Unix epoch (0 before it: such a clock is refused as stale).
fn clock_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

/// A chitchat transport whose sockets seal what they send and drop what does
/// not open.
pub struct SealedTransport {
    keys: GossipKeys,
    drops: Arc<GossipDrops>,
}

impl SealedTransport {
    /// A transport sealing with `keys`, counting drops in `drops`.
    pub fn new(keys: GossipKeys, drops: Arc<GossipDrops>) -> SealedTransport {
        SealedTransport { keys, drops }
    }
}

#[async_trait]
impl Transport for SealedTransport {
    async fn open(&self, listen_addr: SocketAddr) -> anyhow::Result<Box<dyn Socket>> {
        let socket = tokio::net::UdpSocket::bind(listen_addr)
            .await
            .with_context(|| format!("failed to bind to {listen_addr}/UDP for gossip"))?;
        Ok(Box::new(SealedSocket {
            socket,
            keys: self.keys.clone(),
            drops: self.drops.clone(),
            sender: rand::random(),
            last_sequence: 0,
            replays: Replays::default(),
            send_buf: Vec::with_capacity(RECV_BUFFER_LEN),
            recv_buf: vec![0u8; RECV_BUFFER_LEN].into_boxed_slice(),
            warned: [None; DropReason::ALL.len()],
        }))
    }
}

struct SealedSocket {
    socket: tokio::net::UdpSocket,
    keys: GossipKeys,
    drops: Arc<GossipDrops>,
    /// This socket's sender id.
    sender: u64,
    last_sequence: u64,
    replays: Replays,
    send_buf: Vec<u8>,
    recv_buf: Box<[u8]>,
    /// Per reason: when the last warning was logged, and drops since.
    warned: [Option<(Instant, u64)>; DropReason::ALL.len()],
}

impl SealedSocket {
    /// The sender's clock, or one more than the last sequence if that is later.
    fn next_sequence(&mut self) -> u64 {
        self.last_sequence = clock_micros().max(self.last_sequence + 1);
        self.last_sequence
    }

    fn dropped(&mut self, reason: DropReason, from: SocketAddr, len: usize) {
        self.drops.count(reason);
        tracing::debug!(reason = reason.label(), %from, len, "gossip datagram dropped");
        let slot = &mut self.warned[reason.index()];
        match slot {
            Some((at, since)) if at.elapsed() < WARN_INTERVAL => *since += 1,
            _ => {
                let dropped = slot.map_or(1, |(_, since)| since + 1);
                tracing::warn!(
                    reason = reason.label(),
                    %from,
                    dropped,
                    "gossip datagrams dropped: {} (at most one such line a minute)",
                    reason.explain()
                );
                *slot = Some((Instant::now(), 0));
            }
        }
    }
}

/// Receive errors after which the socket still works (as chitchat's own UDP socket).
fn is_transient(error: &std::io::Error) -> bool {
    matches!(
        error.kind(),
        std::io::ErrorKind::OutOfMemory
            | std::io::ErrorKind::ConnectionReset
            | std::io::ErrorKind::ConnectionRefused
    )
}

#[async_trait]
impl Socket for SealedSocket {
    fn local_addr(&self) -> anyhow::Result<SocketAddr> {
        self.socket
            .local_addr()
            .context("failed to get the gossip socket's address")
    }

    async fn send(
        &mut self,
        to: SocketAddr,
        envelope: ChitchatEnvelope,
    ) -> anyhow::Result<SendOutcome> {
        let sequence = self.next_sequence();
        self.send_buf.clear();
        self.keys
            .seal(self.sender, sequence, &mut self.send_buf, |buf| {
                envelope.serialize(buf)
            });
        let num_bytes_sent = self
            .socket
            .send_to(&self.send_buf, to)
            .await
            .with_context(|| format!("failed to send gossip to {to}"))?;
        Ok(SendOutcome { num_bytes_sent })
    }

    /// Cancel-safe, as chitchat needs: nothing is awaited between receiving a
    /// datagram and returning its envelope.
    async fn recv(&mut self) -> anyhow::Result<RecvOutcome> {
        loop {
            let (len, from) = match self.socket.recv_from(&mut self.recv_buf).await {
                Ok(received) => received,
                Err(error) if is_transient(&error) => {
                    tracing::debug!(%error, "transient gossip receive error");
                    continue;
                }
                Err(error) => return Err(error).context("gossip socket failed"),
            };
            let datagram = &self.recv_buf[..len];
            let outcome = self.keys.open(datagram).and_then(|opened| {
                self.replays
                    .check(opened.sender, opened.sequence, clock_micros())?;
                let mut payload = opened.payload;
                ChitchatEnvelope::deserialize(&mut payload).map_err(|_| DropReason::Undecodable)
            });
            match outcome {
                Ok(envelope) => {
                    return Ok(RecvOutcome {
                        from_addr: from,
                        envelope,
                        num_bytes_received: len,
                    })
                }
                Err(reason) => self.dropped(reason, from, len),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Secret;

    fn keys(secret: &str, previous: &[&str]) -> GossipKeys {
        let previous: Vec<Secret> = previous.iter().map(|s| Secret::new(*s)).collect();
        GossipKeys::new(&Signer::with_others(Secret::new(secret), &previous))
    }

    fn sealed(keys: &GossipKeys, sender: u64, sequence: u64, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        keys.seal(sender, sequence, &mut out, |buf| {
            buf.extend_from_slice(payload)
        });
        out
    }

    const S1: &str = "the-first-cluster-secret-xxxxxxx";
    const S2: &str = "the-second-cluster-secret-xxxxxx";

    #[test]
    fn a_sealed_datagram_opens_with_the_same_keys_and_has_the_documented_layout() {
        let k = keys(S1, &[]);
        let datagram = sealed(&k, 7, 1_234, b"envelope");
        assert_eq!(datagram.len(), b"envelope".len() + SEAL_LEN);
        assert_eq!(datagram[0], VERSION);
        assert_eq!(&datagram[5..13], &7u64.to_be_bytes());
        assert_eq!(&datagram[13..21], &1_234u64.to_be_bytes());
        assert_eq!(&datagram[21..29], b"envelope");
        assert_eq!(
            k.open(&datagram),
            Ok(Opened {
                sender: 7,
                sequence: 1_234,
                payload: b"envelope"
            })
        );
    }

    #[test]
    fn any_change_of_any_bit_or_length_is_refused() {
        let k = keys(S1, &[]);
        let datagram = sealed(&k, 7, 1_234, b"a chitchat envelope");
        for byte in 0..datagram.len() {
            for bit in 0..8 {
                let mut changed = datagram.clone();
                changed[byte] ^= 1 << bit;
                let refused = k.open(&changed);
                assert!(refused.is_err(), "byte {byte} bit {bit}");
            }
        }
        for len in 0..datagram.len() {
            assert!(k.open(&datagram[..len]).is_err(), "cut to {len}");
        }
        let mut longer = datagram.clone();
        longer.push(0);
        assert_eq!(k.open(&longer), Err(DropReason::BadMac));
        let mut changed = datagram.clone();
        changed[25] ^= 1;
        assert_eq!(k.open(&changed), Err(DropReason::BadMac));
        changed = datagram.clone();
        changed[1] ^= 1;
        assert_eq!(k.open(&changed), Err(DropReason::UnknownKey));
    }

    #[test]
    fn another_secret_is_an_unknown_key_and_plain_chitchat_is_unsealed() {
        let datagram = sealed(&keys(S2, &[]), 7, 1_234, b"envelope");
        assert_eq!(keys(S1, &[]).open(&datagram), Err(DropReason::UnknownKey));
        let plain = [0x53, 0xb0, 0, 0, 1, 2, 3];
        assert_eq!(keys(S1, &[]).open(&plain), Err(DropReason::Unsealed));
        assert_eq!(keys(S1, &[]).open(b"junk"), Err(DropReason::Malformed));
        let mut other_version = datagram.clone();
        other_version[0] = 2;
        assert_eq!(
            keys(S2, &[]).open(&other_version),
            Err(DropReason::Malformed)
        );
    }

    #[test]
    fn previous_secrets_open_but_only_the_current_one_seals() {
        let rotated = keys(S2, &[S1]);
        let old = keys(S1, &[]);
        let from_old = sealed(&old, 1, 10, b"x");
        assert!(rotated.open(&from_old).is_ok(), "a previous secret opens");
        let from_rotated = sealed(&rotated, 2, 10, b"x");
        assert_eq!(
            old.open(&from_rotated),
            Err(DropReason::UnknownKey),
            "sealed with the current secret, which the old node lacks"
        );
        assert!(keys(S2, &[]).open(&from_rotated).is_ok());
        // Accepting the next secret before sealing with it (the first step of a
        // rotation) changes nothing for nodes that do not know it yet.
        let installing = keys(S1, &[S2]);
        assert!(old.open(&sealed(&installing, 3, 10, b"x")).is_ok());
        assert!(installing.open(&from_rotated).is_ok());
    }

    #[test]
    fn the_gossip_key_is_derived_not_the_secret_itself() {
        let k = keys(S1, &[]);
        let datagram = sealed(&k, 7, 1_234, b"envelope");
        let (body, tag) = datagram.split_at(datagram.len() - TAG_LEN);
        let mut raw = Hmac::<Sha256>::new_from_slice(S1.as_bytes()).unwrap();
        raw.update(body);
        assert!(raw.verify_slice(tag).is_err());
    }

    const NOW: u64 = 1_800_000_000_000_000;

    #[test]
    fn a_sequence_is_accepted_once_and_only_above_the_last_from_its_sender() {
        let mut replays = Replays::default();
        assert_eq!(replays.check(1, NOW, NOW), Ok(()));
        assert_eq!(replays.check(1, NOW, NOW), Err(DropReason::Replayed));
        assert_eq!(replays.check(1, NOW - 1, NOW), Err(DropReason::Replayed));
        assert_eq!(replays.check(2, NOW - 1, NOW), Ok(()), "another sender");
        assert_eq!(replays.check(1, NOW + 1, NOW), Ok(()));
        assert_eq!(
            replays.check(1, NOW + 1, NOW + 5),
            Err(DropReason::Replayed)
        );
    }

    #[test]
    fn a_sequence_outside_the_window_is_stale_for_anyone() {
        let mut replays = Replays::default();
        let skew = MAX_SKEW_MICROS;
        assert_eq!(
            replays.check(1, NOW - skew - 1, NOW),
            Err(DropReason::Stale)
        );
        assert_eq!(
            replays.check(1, NOW + skew + 1, NOW),
            Err(DropReason::Stale)
        );
        assert!(replays.is_empty(), "a refused datagram leaves no trace");
        assert_eq!(replays.check(1, NOW - skew, NOW), Ok(()));
        assert_eq!(replays.check(2, NOW + skew, NOW), Ok(()));
    }

    #[test]
    fn forgotten_senders_stay_refused_even_when_the_clock_goes_back() {
        let mut replays = Replays::default();
        assert_eq!(replays.check(1, NOW, NOW), Ok(()));
        // Much later: sender 1 is pruned by the next accepted datagram.
        let later = NOW + 3 * MAX_SKEW_MICROS;
        assert_eq!(replays.check(2, later, later), Ok(()));
        assert_eq!(replays.len(), 1, "sender 1 was forgotten");
        // The system clock steps back to NOW: the old datagram of sender 1 is
        // still out of the window, because this check's clock never goes back.
        assert_eq!(replays.check(1, NOW, NOW), Err(DropReason::Stale));
    }

    #[test]
    fn the_sender_table_is_bounded() {
        let mut replays = Replays::default();
        for sender in 0..(MAX_SENDERS as u64 + 100) {
            assert_eq!(replays.check(sender, NOW + sender, NOW), Ok(()));
            assert!(replays.len() <= MAX_SENDERS);
        }
        // The newest senders are remembered.
        let newest = MAX_SENDERS as u64 + 99;
        assert_eq!(
            replays.check(newest, NOW + newest, NOW),
            Err(DropReason::Replayed)
        );
    }

    #[tokio::test]
    async fn sockets_exchange_envelopes_and_drop_and_count_the_rest() {
        use chitchat::{ChitchatMessage, ProtocolVersion};

        let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let drops = Arc::new(GossipDrops::default());
        let transport = SealedTransport::new(keys(S1, &[]), drops.clone());
        let mut a = transport.open(any).await.unwrap();
        let mut b = transport.open(any).await.unwrap();
        let b_addr = b.local_addr().unwrap();
        let stranger = tokio::net::UdpSocket::bind(any).await.unwrap();
        let envelope = || ChitchatEnvelope {
            version: ProtocolVersion::V0,
            message: ChitchatMessage::BadCluster,
        };
        // A stranger's datagrams first, then a real one: recv returns the real one.
        stranger.send_to(b"junk", b_addr).await.unwrap();
        let mut plain = Vec::new();
        envelope().serialize(&mut plain);
        stranger.send_to(&plain, b_addr).await.unwrap();
        let other = sealed(&keys(S2, &[]), 1, clock_micros(), &plain);
        stranger.send_to(&other, b_addr).await.unwrap();
        let sent = a.send(b_addr, envelope()).await.unwrap();
        assert_eq!(sent.num_bytes_sent, plain.len() + SEAL_LEN);
        let received = b.recv().await.unwrap();
        assert_eq!(received.envelope, envelope());
        assert_eq!(received.from_addr, a.local_addr().unwrap());
        assert_eq!(drops.get(DropReason::Malformed), 1);
        assert_eq!(drops.get(DropReason::Unsealed), 1);
        assert_eq!(drops.get(DropReason::UnknownKey), 1);
        // An authentic datagram that is not a chitchat envelope.
        let garbage = sealed(&keys(S1, &[]), 2, clock_micros(), b"not chitchat");
        stranger.send_to(&garbage, b_addr).await.unwrap();
        a.send(b_addr, envelope()).await.unwrap();
        b.recv().await.unwrap();
        assert_eq!(drops.get(DropReason::Undecodable), 1);
    }
}
