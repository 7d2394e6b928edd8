//! Authentication of internal requests with the cluster secret.
//!
//! Every request to the internal listener carries
//! `x-sessionmesh-auth: v1.<unix millis>.<node id>.<tag>`, where `tag` is
//! HMAC-SHA256(cluster_secret, "v1\n<millis>\n<node id>\n<METHOD>\n<path?query>\n<hex
//! SHA-256 of the body>") in URL-safe base64. A request whose timestamp is more than
//! [`MAX_SKEW_MS`] away from the receiver's clock is refused, which bounds replays
//! to that window; the body digest means a captured signature cannot carry another body.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

use crate::config::Secret;
use crate::session::{now_millis, UnixMillis};

pub const HEADER: &str = "x-sessionmesh-auth";

/// Largest accepted difference between the signer's clock and ours.
pub const MAX_SKEW_MS: u64 = 30_000;

/// Signs and checks with the cluster secret. `Debug` shows no secret.
#[derive(Clone, Debug)]
pub struct Signer {
    secret: Secret,
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
}

impl Signer {
    pub fn new(secret: Secret) -> Signer {
        Signer { secret }
    }

    /// An HMAC over `parts`, each followed by a newline.
    pub fn mac(&self, parts: &[&[u8]]) -> Hmac<Sha256> {
        let mut mac = Hmac::<Sha256>::new_from_slice(self.secret.expose())
            .expect("HMAC accepts keys of any length");
        for part in parts {
            mac.update(part);
            mac.update(b"\n");
        }
        mac
    }

    fn request_mac(
        &self,
        millis: UnixMillis,
        node_id: &str,
        method: &str,
        path: &str,
        body: &[u8],
    ) -> Hmac<Sha256> {
        let digest = hex(&Sha256::digest(body));
        self.mac(&[
            b"v1",
            millis.to_string().as_bytes(),
            node_id.as_bytes(),
            method.as_bytes(),
            path.as_bytes(),
            digest.as_bytes(),
        ])
    }

    /// The header value for a request from `node_id`.
    pub fn sign(&self, node_id: &str, method: &str, path_and_query: &str, body: &[u8]) -> String {
        let millis = now_millis();
        let tag = self
            .request_mac(millis, node_id, method, path_and_query, body)
            .finalize()
            .into_bytes();
        format!("v1.{millis}.{node_id}.{}", URL_SAFE_NO_PAD.encode(tag))
    }

    /// Checks a header value; returns the signer's node id.
    pub fn verify<'a>(
        &self,
        header: Option<&'a str>,
        method: &str,
        path_and_query: &str,
        body: &[u8],
    ) -> Result<&'a str, AuthError> {
        let header = header.ok_or(AuthError::Missing)?;
        let rest = header.strip_prefix("v1.").ok_or(AuthError::Malformed)?;
        let (millis, rest) = rest.split_once('.').ok_or(AuthError::Malformed)?;
        let (node_id, tag) = rest.rsplit_once('.').ok_or(AuthError::Malformed)?;
        let millis: UnixMillis = millis.parse().map_err(|_| AuthError::Malformed)?;
        let tag = URL_SAFE_NO_PAD
            .decode(tag)
            .map_err(|_| AuthError::Malformed)?;
        if now_millis().abs_diff(millis) > MAX_SKEW_MS {
            return Err(AuthError::Stale);
        }
        self.request_mac(millis, node_id, method, path_and_query, body)
            .verify_slice(&tag)
            .map_err(|_| AuthError::BadSignature)?;
        Ok(node_id)
    }
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
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
    fn old_and_malformed_headers_are_refused() {
        let s = signer("cluster-secret-cluster-secret-xx");
        let old = now_millis() - MAX_SKEW_MS - 1_000;
        let tag = s
            .request_mac(old, "n", "GET", "/x", b"")
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
