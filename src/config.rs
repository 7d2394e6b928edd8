//! TEMPORARY stub until the config branch lands.
use std::net::SocketAddr;
use std::num::{NonZeroU32, NonZeroUsize};
use std::sync::Arc;
use std::time::Duration;

#[derive(Clone)]
pub struct Secret(Arc<[u8]>);
impl Secret {
    pub fn new(b: impl Into<Vec<u8>>) -> Secret { Secret(b.into().into()) }
    pub fn expose(&self) -> &[u8] { &self.0 }
    pub fn random() -> Secret { Secret::new(rand::random::<[u8; 32]>().to_vec()) }
}
impl std::fmt::Debug for Secret { fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result { f.write_str("Secret(***)") } }
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SameSite { Strict, Lax, None }
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat { Text, Json }
#[derive(Clone, Debug)]
pub struct Config {
    pub node_id: String, pub cluster_id: String, pub public_addr: SocketAddr, pub internal_addr: SocketAddr, pub gossip_addr: SocketAddr,
    pub advertise_host: Option<String>, pub seeds: Vec<String>, pub replication_factor: NonZeroUsize, pub vnodes: NonZeroU32,
    pub session_ttl: Duration, pub max_session_bytes: usize, pub cookie_name: String, pub cookie_secure: bool, pub cookie_same_site: SameSite,
    pub cookie_secret: Secret, pub cluster_secret: Secret, pub api_token: Option<Secret>, pub gossip_interval: Duration,
    pub dead_node_grace: Duration, pub forward_timeout: Duration, pub shutdown_grace: Duration, pub log_format: LogFormat, pub generated_secrets: bool,
    pub workers: usize,
}
impl Default for Config {
    fn default() -> Self {
        Config { node_id: "n".into(), cluster_id: "sessionmesh".into(), public_addr: "127.0.0.1:8080".parse().unwrap(), internal_addr: "127.0.0.1:8081".parse().unwrap(), gossip_addr: "127.0.0.1:7280".parse().unwrap(),
        advertise_host: None, seeds: vec![], replication_factor: NonZeroUsize::new(2).unwrap(), vnodes: NonZeroU32::new(128).unwrap(), session_ttl: Duration::from_secs(1800), max_session_bytes: 65536,
        cookie_name: "SESSION".into(), cookie_secure: false, cookie_same_site: SameSite::Lax, cookie_secret: Secret::random(), cluster_secret: Secret::random(), api_token: None,
        gossip_interval: Duration::from_millis(500), dead_node_grace: Duration::from_secs(60), forward_timeout: Duration::from_secs(5), shutdown_grace: Duration::from_secs(10), log_format: LogFormat::Text, generated_secrets: true, workers: 1 }
    }
}
