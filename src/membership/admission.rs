//! Admission: a member learned from gossip enters the ring only after it proved,
//! on its internal listener, that it knows the cluster secret.
//!
//! Gossip itself is sealed with the cluster secret (see [`super::gossip`]), so
//! only a holder of the secret can announce a member; but the member's
//! addresses are whatever it gossips, and may point at somebody else (a wrong
//! `advertise_host`, a reused address). Before a member can own or hold a
//! single session, this node sends it a signed
//! challenge (a fresh nonce) at its advertised internal address; it must answer
//! with HMAC(cluster_secret, cluster id, its node id, its generation, nonce). A
//! wrong proof, or an answer from another node id or generation (an address that
//! points at somebody else), refuses the member; an unreachable one is retried.
//! The challenge itself is signed, so a stranger cannot use a node as an oracle.
//!
//! With internal TLS on, the challenge goes over mutual TLS: a member whose
//! certificate the cluster's CA did not issue (or that does not speak TLS) fails
//! the handshake and is refused like a wrong proof.

use std::collections::HashMap;
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::Mac;
use serde::{Deserialize, Serialize};
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::Member;
use crate::auth::{self, Signer};
use crate::ring::NodeId;
use crate::tls::{self, PeerTransport};

/// Route of the challenge on the internal listener.
pub const ADMISSION_PATH: &str = "/internal/admission";

/// The answer to a challenge.
#[derive(Debug, Serialize, Deserialize)]
pub struct Proof {
    pub cluster_id: String,
    pub node_id: String,
    pub generation: u64,
    pub proof: String,
}

/// The proof for `nonce` by the node `(node_id, generation)`.
pub fn prove(
    signer: &Signer,
    cluster_id: &str,
    node_id: &str,
    generation: u64,
    nonce: &str,
) -> String {
    let tag = signer
        .mac(&[
            b"admit",
            cluster_id.as_bytes(),
            node_id.as_bytes(),
            generation.to_string().as_bytes(),
            nonce.as_bytes(),
        ])
        .finalize()
        .into_bytes();
    URL_SAFE_NO_PAD.encode(tag)
}

fn verify(
    signer: &Signer,
    cluster_id: &str,
    member: &Member,
    nonce: &str,
    answer: &Proof,
) -> Result<(), String> {
    if answer.cluster_id != cluster_id {
        return Err(format!("answered for cluster {:?}", answer.cluster_id));
    }
    if *answer.node_id != *member.node_id || answer.generation != member.generation {
        return Err(format!(
            "the address answered as {}/{}, not as the gossiped {}/{}",
            answer.node_id, answer.generation, member.node_id, member.generation
        ));
    }
    let given = URL_SAFE_NO_PAD
        .decode(&answer.proof)
        .map_err(|_| "malformed proof".to_owned())?;
    let generation = member.generation.to_string();
    let parts: [&[u8]; 5] = [
        b"admit",
        cluster_id.as_bytes(),
        member.node_id.as_bytes(),
        generation.as_bytes(),
        nonce.as_bytes(),
    ];
    match signer.verify_mac(&parts, &given) {
        true => Ok(()),
        false => Err("wrong proof: another cluster secret".to_owned()),
    }
}

type Key = (NodeId, u64);

enum State {
    /// A probe is out; `failures` and `refused` remember the earlier ones.
    Probing {
        failures: u32,
        refused: bool,
    },
    Admitted,
    /// Unreachable or refused; probe again at `at`.
    Retry {
        at: Instant,
        failures: u32,
        refused: bool,
    },
}

enum Outcome {
    Admitted,
    Refused(String),
    Unreachable(String),
}

/// How long a refused member waits before it is challenged again (its operator
/// may fix its secret).
const REFUSED_RETRY: Duration = Duration::from_secs(10);

/// Admission state of the members this node has seen.
pub(super) struct Admission {
    self_key: Key,
    cluster_id: String,
    signer: Signer,
    client: reqwest::Client,
    transport: PeerTransport,
    states: HashMap<Key, State>,
    probes: JoinSet<(Key, Outcome)>,
}

impl Admission {
    pub fn new(
        self_key: Key,
        cluster_id: String,
        signer: Signer,
        transport: &PeerTransport,
    ) -> anyhow::Result<Admission> {
        let client = transport
            .client_builder()
            .connect_timeout(Duration::from_millis(500))
            .timeout(Duration::from_secs(2))
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        Ok(Admission {
            self_key,
            cluster_id,
            signer,
            client,
            transport: transport.clone(),
            states: HashMap::new(),
            probes: JoinSet::new(),
        })
    }

    pub fn admitted(&self, member: &Member) -> bool {
        let key = (member.node_id.clone(), member.generation);
        key == self.self_key || matches!(self.states.get(&key), Some(State::Admitted))
    }

    /// Starts probes for members not yet admitted whose turn has come, and
    /// forgets members that are gone.
    pub fn schedule(&mut self, members: &HashMap<NodeId, Member>) {
        self.states.retain(|(id, generation), _| {
            members.get(id).is_some_and(|m| m.generation == *generation)
        });
        let now = Instant::now();
        for member in members.values() {
            let key = (member.node_id.clone(), member.generation);
            if key == self.self_key {
                continue;
            }
            let (failures, refused) = match self.states.get(&key) {
                None => (0, false),
                Some(State::Retry {
                    at,
                    failures,
                    refused,
                }) if *at <= now => (*failures, *refused),
                Some(_) => continue,
            };
            self.states
                .insert(key, State::Probing { failures, refused });
            self.probes.spawn(probe(
                self.client.clone(),
                self.transport.clone(),
                self.signer.clone(),
                self.self_key.0.clone(),
                self.cluster_id.clone(),
                member.clone(),
            ));
        }
    }

    /// When the next retry is due, if any.
    pub fn next_retry(&self) -> Option<Instant> {
        self.states
            .values()
            .filter_map(|s| match s {
                State::Retry { at, .. } => Some(*at),
                _ => None,
            })
            .min()
    }

    /// Waits for the next probe to finish and records it. Returns whether a
    /// member was admitted. Pends forever when no probe is out.
    pub async fn next_result(&mut self) -> bool {
        let Some(joined) = self.probes.join_next().await else {
            return std::future::pending().await;
        };
        let Ok((key, outcome)) = joined else {
            return false;
        };
        let Some(State::Probing { failures, refused }) = self.states.get(&key) else {
            // The member went away meanwhile.
            return false;
        };
        let (failures, refused) = (*failures, *refused);
        let (node, generation) = (&key.0, key.1);
        let next = match outcome {
            Outcome::Admitted => {
                tracing::info!(%node, generation, "member admitted: it proved the cluster secret");
                State::Admitted
            }
            Outcome::Refused(why) => {
                if !refused {
                    tracing::warn!(%node, generation, reason = %why, "member refused: it stays out of the ring");
                }
                State::Retry {
                    at: Instant::now() + REFUSED_RETRY,
                    failures: failures + 1,
                    refused: true,
                }
            }
            Outcome::Unreachable(why) => {
                tracing::debug!(%node, generation, reason = %why, "admission probe failed; retrying");
                let backoff = Duration::from_millis(100 * 2u64.pow(failures.min(6)))
                    .min(Duration::from_secs(5));
                State::Retry {
                    at: Instant::now() + backoff,
                    failures: failures + 1,
                    refused,
                }
            }
        };
        let admitted = matches!(next, State::Admitted);
        self.states.insert(key, next);
        admitted
    }
}

/// Challenges `member` at its internal address.
async fn probe(
    client: reqwest::Client,
    transport: PeerTransport,
    signer: Signer,
    self_id: NodeId,
    cluster_id: String,
    member: Member,
) -> (Key, Outcome) {
    let key = (member.node_id.clone(), member.generation);
    let nonce = URL_SAFE_NO_PAD.encode(rand::random::<[u8; 16]>());
    let path = format!("{ADMISSION_PATH}?nonce={nonce}");
    let request = client
        .get(transport.url(&member.internal_addr, &path))
        .header(auth::HEADER, signer.sign(&self_id, "GET", &path, b""))
        .send();
    let outcome = match request.await {
        Err(e) if tls::is_tls_error(&e) => Outcome::Refused(format!(
            "TLS failed (a certificate that internal_tls_ca_file did not issue?): {}",
            tls::error_chain(&e)
        )),
        Err(e) => Outcome::Unreachable(e.to_string()),
        Ok(r) if r.status() == reqwest::StatusCode::UNAUTHORIZED => {
            Outcome::Refused("it refused our challenge: another cluster secret".to_owned())
        }
        Ok(r) if !r.status().is_success() => Outcome::Unreachable(format!("status {}", r.status())),
        Ok(r) => match r.json::<Proof>().await {
            Err(e) => Outcome::Refused(format!("malformed answer: {e}")),
            Ok(answer) => match verify(&signer, &cluster_id, &member, &nonce, &answer) {
                Ok(()) => Outcome::Admitted,
                Err(why) => Outcome::Refused(why),
            },
        },
    };
    (key, outcome)
}
