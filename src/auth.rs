//! Authentication of internal requests with the cluster secret.
//!
//! Every request to the internal listener carries
//! `x-sessionmesh-auth: v2.<unix millis>.<nonce>.<node id>.<tag>`, where `nonce` is
//! 128 random bits and `tag` is `HMAC-SHA256(cluster_secret, "v2\n<millis>\n<nonce>\n<node
//! id>\n<METHOD>\n<path?query>\n<hex SHA-256 of the body>")`, both in URL-safe base64. A
//! request whose timestamp is more than [`MAX_SKEW_MS`] away from the receiver's clock
//! is refused, and within that window the receiver refuses a nonce it has seen
//! ([`Replays`]): a captured request cannot be played again. The body digest means
//! a captured signature cannot carry another body. (`v1` headers, the same without
//! a nonce, from nodes of earlier versions, are still accepted during a rolling
//! upgrade, with the timestamp window as their only replay bound.)
//! The digest also travels in [`DIGEST_HEADER`], so that the receiver checks the
//! signature before it reads (and buffers) the body, then the body against it.
//!
//! The signer may also hold other cluster secrets (`cluster_previous_secrets`,
//! for a key rotation): signatures and proofs made with any of them are
//! accepted, while everything this node signs uses `cluster_secret`.
//!
//! A forwarded request may also carry [`SESSION_HEADER`]: the session id that the
//! entry node read from a cookie whose signature it checked, so that the owner
//! need not check it again. When present, the header's value is part of the
//! signed text (a line `session <id>` after the digest), so it cannot be added,
//! removed or changed without the cluster secret.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

use std::sync::Arc;

use crate::config::{Config, Secret};
use crate::session::{now_millis, UnixMillis};

/// Header carrying the signature of an internal request.
pub const HEADER: &str = "x-sessionmesh-auth";

/// The session id an entry node verified from the request's cookie (signed along
/// with the request; see the module doc).
pub const SESSION_HEADER: &str = "x-sessionmesh-session";

/// Header carrying the hex SHA-256 of an internal request's body, which the
/// signature covers: the receiver checks the signature before it reads the
/// body, then the body against this digest. Absent for an empty body.
pub const DIGEST_HEADER: &str = "x-sessionmesh-content-sha256";

/// Hex SHA-256 of the empty body (most internal requests have none).
const EMPTY_BODY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

/// Largest accepted difference between the signer's clock and ours.
pub const MAX_SKEW_MS: u64 = 30_000;

/// Signs with the cluster secret and checks with it and the other accepted
/// secrets. `Debug` shows no secret.
#[derive(Clone)]
pub struct Signer {
    /// HMAC state keyed once with the cluster secret; cloned per message, which
    /// saves re-deriving the padded key blocks every time.
    keyed: Hmac<Sha256>,
    /// The same for each other accepted secret (never used to sign).
    others: Arc<[Hmac<Sha256>]>,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Signer(***)")
    }
}

/// Why an internal request was refused.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("missing {HEADER} header")]
    Missing,
    #[error("malformed {HEADER} header")]
    Malformed,
    #[error("request timestamp outside the accepted window")]
    Stale,
    #[error("bad signature")]
    BadSignature,
    #[error("request replayed (its nonce was seen within the timestamp window)")]
    Replayed,
    #[error("too many signed requests within the timestamp window to remember them")]
    TooMany,
}

/// A signature that checked out.
#[derive(Debug, PartialEq, Eq)]
pub struct Verified<'a> {
    /// The signer's node id.
    pub node: &'a str,
    /// When it signed (its clock).
    pub millis: UnixMillis,
    /// The request's nonce (absent in a `v1` header).
    pub nonce: Option<u128>,
}

fn keyed(secret: &Secret) -> Hmac<Sha256> {
    Hmac::<Sha256>::new_from_slice(secret.expose()).expect("HMAC accepts keys of any length")
}

/// `keyed` over `parts`, each followed by a newline.
fn mac_with(keyed: &Hmac<Sha256>, parts: &[&[u8]]) -> Hmac<Sha256> {
    let mut mac = keyed.clone();
    for part in parts {
        mac.update(part);
        mac.update(b"\n");
    }
    mac
}

impl Signer {
    /// Signs and checks with `secret` alone.
    pub fn new(secret: Secret) -> Signer {
        Signer::with_others(secret, &[])
    }

    /// Signs with `secret`; also accepts what `others` signed.
    pub fn with_others(secret: Secret, others: &[Secret]) -> Signer {
        Signer {
            keyed: keyed(&secret),
            others: others.iter().map(keyed).collect(),
        }
    }

    /// The cluster's signer: `cluster_secret`, and `cluster_previous_secrets` accepted.
    pub fn for_cluster(config: &Config) -> Signer {
        Signer::with_others(
            config.cluster_secret.clone(),
            &config.cluster_previous_secrets,
        )
    }

    /// Every accepted key, the signing one first.
    fn keys(&self) -> impl Iterator<Item = &Hmac<Sha256>> {
        std::iter::once(&self.keyed).chain(self.others.iter())
    }

    /// An HMAC over `parts`, each followed by a newline, with the signing key.
    pub fn mac(&self, parts: &[&[u8]]) -> Hmac<Sha256> {
        mac_with(&self.keyed, parts)
    }

    /// Whether `tag` is the HMAC of `parts` (as [`Signer::mac`] makes it) under
    /// any accepted key; compared in constant time.
    pub fn verify_mac(&self, parts: &[&[u8]], tag: &[u8]) -> bool {
        self.keys()
            .any(|keyed| mac_with(keyed, parts).verify_slice(tag).is_ok())
    }

    /// One 32-byte key per accepted secret, the signing one first: HMAC-SHA256
    /// of `label` and a newline under the secret. A label must not begin like
    /// anything else this module MACs (`v1\n`, `admit\n`), so that no signature
    /// or proof a node hands out can ever equal a derived key.
    pub fn derive_keys(&self, label: &[u8]) -> Vec<[u8; 32]> {
        self.keys()
            .map(|keyed| mac_with(keyed, &[label]).finalize().into_bytes().into())
            .collect()
    }

    #[allow(clippy::too_many_arguments)]
    fn request_mac(
        &self,
        keyed: &Hmac<Sha256>,
        millis: UnixMillis,
        nonce: Option<&str>,
        node_id: &str,
        method: &str,
        path: &str,
        digest: &str,
        session: Option<&str>,
    ) -> Hmac<Sha256> {
        let mut millis_text = [0u8; 20];
        let millis = decimal(millis, &mut millis_text);
        let mut mac = match nonce {
            Some(nonce) => mac_with(
                keyed,
                &[
                    b"v2",
                    millis,
                    nonce.as_bytes(),
                    node_id.as_bytes(),
                    method.as_bytes(),
                    path.as_bytes(),
                    digest.as_bytes(),
                ],
            ),
            None => mac_with(
                keyed,
                &[
                    b"v1",
                    millis,
                    node_id.as_bytes(),
                    method.as_bytes(),
                    path.as_bytes(),
                    digest.as_bytes(),
                ],
            ),
        };
        if let Some(session) = session {
            mac.update(b"session ");
            mac.update(session.as_bytes());
            mac.update(b"\n");
        }
        mac
    }

    /// The header value for a request from `node_id`.
    pub fn sign(&self, node_id: &str, method: &str, path_and_query: &str, body: &[u8]) -> String {
        self.sign_with_session(node_id, method, path_and_query, body, None)
    }

    /// The header value for a request from `node_id` that also carries
    /// `session` in [`SESSION_HEADER`] (signed along).
    pub fn sign_with_session(
        &self,
        node_id: &str,
        method: &str,
        path_and_query: &str,
        body: &[u8],
        session: Option<&str>,
    ) -> String {
        self.sign_claimed(node_id, method, path_and_query, &body_digest(body), session)
    }

    /// The header value for a request whose body has `digest`
    /// ([`body_digest`]), sent along in [`DIGEST_HEADER`].
    pub fn sign_claimed(
        &self,
        node_id: &str,
        method: &str,
        path_and_query: &str,
        digest: &str,
        session: Option<&str>,
    ) -> String {
        let millis = now_millis();
        let nonce = URL_SAFE_NO_PAD.encode(rand::random::<u128>().to_be_bytes());
        let tag = self
            .request_mac(
                &self.keyed,
                millis,
                Some(&nonce),
                node_id,
                method,
                path_and_query,
                digest,
                session,
            )
            .finalize()
            .into_bytes();
        format!(
            "v2.{millis}.{nonce}.{node_id}.{}",
            URL_SAFE_NO_PAD.encode(tag)
        )
    }

    /// Checks a header value; returns the signer's node id.
    pub fn verify<'a>(
        &self,
        header: Option<&'a str>,
        method: &str,
        path_and_query: &str,
        body: &[u8],
    ) -> Result<&'a str, AuthError> {
        self.verify_with_session(header, method, path_and_query, body, None)
    }

    /// Checks a header value of a request that carries `session` in
    /// [`SESSION_HEADER`] (or none); returns the signer's node id.
    pub fn verify_with_session<'a>(
        &self,
        header: Option<&'a str>,
        method: &str,
        path_and_query: &str,
        body: &[u8],
        session: Option<&str>,
    ) -> Result<&'a str, AuthError> {
        self.verify_claimed(header, method, path_and_query, &body_digest(body), session)
    }

    /// Checks a header value against the body digest the request claims
    /// ([`DIGEST_HEADER`]; [`body_digest`] of nothing when absent), before the
    /// body is read; returns the signer's node id. The body must then be
    /// checked against `digest`.
    pub fn verify_claimed<'a>(
        &self,
        header: Option<&'a str>,
        method: &str,
        path_and_query: &str,
        digest: &str,
        session: Option<&str>,
    ) -> Result<&'a str, AuthError> {
        self.verify_request(header, method, path_and_query, digest, session)
            .map(|verified| verified.node)
    }

    /// [`Signer::verify_claimed`], with what the header says of the request:
    /// the caller checks its nonce against [`Replays`].
    pub fn verify_request<'a>(
        &self,
        header: Option<&'a str>,
        method: &str,
        path_and_query: &str,
        digest: &str,
        session: Option<&str>,
    ) -> Result<Verified<'a>, AuthError> {
        let header = header.ok_or(AuthError::Missing)?;
        let (v2, rest) = match (header.strip_prefix("v2."), header.strip_prefix("v1.")) {
            (Some(rest), _) => (true, rest),
            (None, Some(rest)) => (false, rest),
            (None, None) => return Err(AuthError::Malformed),
        };
        let (millis, rest) = rest.split_once('.').ok_or(AuthError::Malformed)?;
        let (nonce_text, rest) = match v2 {
            true => {
                let (nonce, rest) = rest.split_once('.').ok_or(AuthError::Malformed)?;
                (Some(nonce), rest)
            }
            false => (None, rest),
        };
        let nonce = match nonce_text {
            Some(text) => {
                let mut bytes = [0u8; 16];
                match URL_SAFE_NO_PAD.decode_slice(text, &mut bytes) {
                    Ok(16) => Some(u128::from_be_bytes(bytes)),
                    _ => return Err(AuthError::Malformed),
                }
            }
            None => None,
        };
        let (node_id, tag) = rest.rsplit_once('.').ok_or(AuthError::Malformed)?;
        let millis: UnixMillis = millis.parse().map_err(|_| AuthError::Malformed)?;
        let mut given = [0u8; 32];
        let len = URL_SAFE_NO_PAD
            .decode_slice(tag, &mut given)
            .map_err(|_| AuthError::Malformed)?;
        if now_millis().abs_diff(millis) > MAX_SKEW_MS {
            return Err(AuthError::Stale);
        }
        let signed_by_one = self.keys().any(|keyed| {
            self.request_mac(
                keyed,
                millis,
                nonce_text,
                node_id,
                method,
                path_and_query,
                digest,
                session,
            )
            .verify_slice(&given[..len])
            .is_ok()
        });
        match signed_by_one {
            true => Ok(Verified {
                node: node_id,
                millis,
                nonce,
            }),
            false => Err(AuthError::BadSignature),
        }
    }
}

/// Most nonces [`Replays`] remembers: with every one still inside the
/// timestamp window (peers signing more than about 2,000 requests a second for
/// a minute), further signed requests are refused until the oldest leave it.
pub const MAX_NONCES: usize = 1 << 18;

/// The nonces of the signed requests a node accepted whose timestamps are
/// still inside the window ([`MAX_SKEW_MS`] either way): a request that comes
/// again is refused. Bounded by [`MAX_NONCES`].
#[derive(Default)]
pub struct Replays {
    seen: parking_lot::Mutex<Seen>,
}

#[derive(Default)]
struct Seen {
    nonces: std::collections::HashSet<u128>,
    /// In arrival order, with their timestamps: the front leaves first.
    order: std::collections::VecDeque<(UnixMillis, u128)>,
}

impl Replays {
    /// Records a verified request's nonce; refuses one seen before. A `v1`
    /// request (no nonce) passes.
    pub fn check(&self, verified: &Verified<'_>, now: UnixMillis) -> Result<(), AuthError> {
        let Some(nonce) = verified.nonce else {
            return Ok(());
        };
        let mut seen = self.seen.lock();
        // A nonce is forgotten only once its timestamp left the window: from
        // then on the timestamp check refuses the request anyway. (Arrival
        // order is not timestamp order: an entry behind a younger one stays a
        // little longer, never less.)
        while let Some(&(millis, old)) = seen.order.front() {
            if millis.saturating_add(MAX_SKEW_MS) >= now {
                break;
            }
            seen.order.pop_front();
            seen.nonces.remove(&old);
        }
        if seen.nonces.contains(&nonce) {
            return Err(AuthError::Replayed);
        }
        if seen.nonces.len() >= MAX_NONCES {
            return Err(AuthError::TooMany);
        }
        seen.nonces.insert(nonce);
        seen.order.push_back((verified.millis, nonce));
        Ok(())
    }

    /// Nonces remembered now.
    pub fn len(&self) -> usize {
        self.seen.lock().nonces.len()
    }

    /// Whether none is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The body digest a signature covers: lower-case hex SHA-256.
pub fn body_digest(body: &[u8]) -> String {
    if body.is_empty() {
        EMPTY_BODY_SHA256.to_owned()
    } else {
        hex(&Sha256::digest(body))
    }
}

/// [`body_digest`] of nothing.
pub fn empty_body_digest() -> &'static str {
    EMPTY_BODY_SHA256
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    out
}

/// The decimal digits of `n`, written at the end of `buf`.
fn decimal(mut n: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut at = buf.len();
    loop {
        at -= 1;
        buf[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return &buf[at..];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signer(s: &str) -> Signer {
        Signer::new(Secret::new(s.as_bytes().to_vec()))
    }

    const PATH: &str = "/fwd/api/sessions/x?a=1";

    #[test]
    fn a_signature_verifies_for_the_same_request_only() {
        let s = signer("cluster-secret-cluster-secret-xx");
        let h = s.sign("node1", "PUT", PATH, b"{}");
        assert_eq!(s.verify(Some(&h), "PUT", PATH, b"{}"), Ok("node1"));
        assert_eq!(
            s.verify(Some(&h), "GET", PATH, b"{}"),
            Err(AuthError::BadSignature)
        );
        assert_eq!(
            s.verify(Some(&h), "PUT", "/fwd/api/sessions/y?a=1", b"{}"),
            Err(AuthError::BadSignature)
        );
        assert_eq!(
            s.verify(Some(&h), "PUT", PATH, b"{\"a\":1}"),
            Err(AuthError::BadSignature),
            "another body"
        );
        let other = signer("another-secret-another-secret-xx");
        assert_eq!(
            other.verify(Some(&h), "PUT", PATH, b"{}"),
            Err(AuthError::BadSignature)
        );
    }

    #[test]
    fn other_secrets_are_accepted_but_never_used_to_sign() {
        let old = signer("the-old-cluster-secret-xxxxxxxxx");
        let new = Secret::new(b"the-new-cluster-secret-xxxxxxxxx".to_vec());
        let old_secret = Secret::new(b"the-old-cluster-secret-xxxxxxxxx".to_vec());
        let rotated = Signer::with_others(new.clone(), &[old_secret]);
        let by_old = old.sign("node1", "GET", PATH, b"");
        assert_eq!(rotated.verify(Some(&by_old), "GET", PATH, b""), Ok("node1"));
        let by_rotated = rotated.sign("node2", "GET", PATH, b"");
        assert_eq!(
            old.verify(Some(&by_rotated), "GET", PATH, b""),
            Err(AuthError::BadSignature),
            "signed with the new secret, which the old signer lacks"
        );
        assert_eq!(
            Signer::new(new).verify(Some(&by_rotated), "GET", PATH, b""),
            Ok("node2")
        );
        let parts: [&[u8]; 2] = [b"admit", b"x"];
        let proof = old.mac(&parts).finalize().into_bytes();
        assert!(rotated.verify_mac(&parts, &proof));
        assert!(!rotated.verify_mac(&[b"admit", b"y"], &proof));
        assert!(!signer("yet-another-secret-xxxxxxxxxxxxx").verify_mac(&parts, &proof));
        let keys = rotated.derive_keys(b"label");
        assert_eq!(keys.len(), 2);
        assert_eq!(keys[1], old.derive_keys(b"label")[0]);
        assert_ne!(keys[0], keys[1]);
    }

    #[test]
    fn the_empty_body_digest_and_the_number_format_are_the_usual_ones() {
        assert_eq!(EMPTY_BODY_SHA256, hex(&Sha256::digest(b"")));
        let mut buf = [0u8; 20];
        for n in [0, 7, 10, 1_764_000_000_123, u64::MAX] {
            assert_eq!(decimal(n, &mut buf), n.to_string().as_bytes());
        }
    }

    #[test]
    fn a_signed_session_header_cannot_be_added_removed_or_changed() {
        let s = signer("cluster-secret-cluster-secret-xx");
        let with = s.sign_with_session("node1", "GET", PATH, b"", Some("abc"));
        assert_eq!(
            s.verify_with_session(Some(&with), "GET", PATH, b"", Some("abc")),
            Ok("node1")
        );
        assert_eq!(
            s.verify_with_session(Some(&with), "GET", PATH, b"", Some("abd")),
            Err(AuthError::BadSignature),
            "changed"
        );
        assert_eq!(
            s.verify(Some(&with), "GET", PATH, b""),
            Err(AuthError::BadSignature),
            "removed"
        );
        let without = s.sign("node1", "GET", PATH, b"");
        assert_eq!(
            s.verify_with_session(Some(&without), "GET", PATH, b"", Some("abc")),
            Err(AuthError::BadSignature),
            "added"
        );
    }

    #[test]
    fn node_ids_cannot_be_swapped() {
        let s = signer("cluster-secret-cluster-secret-xx");
        let h = s.sign("node1", "GET", "/x", b"");
        let forged = h.replacen("node1", "node2", 1);
        assert_eq!(
            s.verify(Some(&forged), "GET", "/x", b""),
            Err(AuthError::BadSignature)
        );
    }

    #[test]
    fn a_request_is_accepted_once_within_the_window() {
        let s = signer("cluster-secret-cluster-secret-xx");
        let replays = Replays::default();
        let now = now_millis();
        let first = s.sign("n", "GET", "/x", b"");
        let second = s.sign("n", "GET", "/x", b"");
        assert_ne!(
            first, second,
            "two signatures of one request differ (nonces)"
        );
        for header in [&first, &second] {
            let verified = s
                .verify_request(Some(header), "GET", "/x", EMPTY_BODY_SHA256, None)
                .unwrap();
            assert_eq!(replays.check(&verified, now), Ok(()));
            assert_eq!(replays.check(&verified, now), Err(AuthError::Replayed));
        }
        // Forgotten only once the timestamp left the window, when the
        // timestamp check refuses it anyway.
        let later = now + MAX_SKEW_MS + 5_000;
        let fresh = s.sign("n", "GET", "/y", b"");
        let fresh = s
            .verify_request(Some(&fresh), "GET", "/y", EMPTY_BODY_SHA256, None)
            .unwrap();
        assert_eq!(replays.check(&fresh, later), Ok(()));
        assert_eq!(replays.len(), 1);
        assert_eq!(
            s.verify(Some(&first), "GET", "/x", b"").err(),
            None,
            "still inside the window now"
        );
    }

    #[test]
    fn the_replay_memory_is_bounded() {
        let replays = Replays::default();
        let now = now_millis();
        for n in 0..MAX_NONCES as u128 {
            let v = Verified {
                node: "n",
                millis: now,
                nonce: Some(n),
            };
            assert_eq!(replays.check(&v, now), Ok(()));
        }
        let one_more = Verified {
            node: "n",
            millis: now,
            nonce: Some(u128::MAX),
        };
        assert_eq!(replays.check(&one_more, now), Err(AuthError::TooMany));
        assert_eq!(replays.len(), MAX_NONCES);
        // Once they leave the window, room again.
        let later = now + MAX_SKEW_MS + 1;
        assert_eq!(replays.check(&one_more, later), Ok(()));
        assert_eq!(replays.len(), 1);
    }

    #[test]
    fn old_and_malformed_headers_are_refused() {
        let s = signer("cluster-secret-cluster-secret-xx");
        let old = now_millis() - MAX_SKEW_MS - 1_000;
        let tag = s
            .request_mac(
                &s.keyed,
                old,
                None,
                "n",
                "GET",
                "/x",
                EMPTY_BODY_SHA256,
                None,
            )
            .finalize()
            .into_bytes();
        let stale = format!("v1.{old}.n.{}", URL_SAFE_NO_PAD.encode(tag));
        assert_eq!(
            s.verify(Some(&stale), "GET", "/x", b""),
            Err(AuthError::Stale)
        );
        assert_eq!(s.verify(None, "GET", "/x", b""), Err(AuthError::Missing));
        for bad in ["", "v1", "v2.1.n.t", "v1.x.n.t", "v1.1.n.%%%"] {
            assert_eq!(
                s.verify(Some(bad), "GET", "/x", b""),
                Err(AuthError::Malformed),
                "{bad}"
            );
        }
    }
}
