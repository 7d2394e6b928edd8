//! Configuration: the TOML file, `SESSIONMESH_*` environment variables and flags, turned into one validated, typed [`Config`].
//!
//! Three layers, later wins: the file named by `--config` (or `SESSIONMESH_CONFIG`), the
//! environment (`SESSIONMESH_<KEY>`), the flags (`--<key-with-dashes>`). Each layer is first
//! collected as raw text per key, remembering where every value came from; then every key is
//! parsed exactly once into its type. So an error always names the key and its source, and a
//! typo is an error rather than a silently ignored setting: unknown keys in the file and unknown
//! `SESSIONMESH_*` variables stop the program.
//!
//! Secrets (`cookie_secret`, `cluster_secret`, `api_token`) are given directly or through a file
//! (`cookie_secret_file`, ...). A single node without seeds may run on throwaway secrets, generated
//! here ([`Config::generated_secrets`]); a node with seeds must share the cluster's secrets.
//!
//! TLS is off unless certificate files are given (`public_tls_cert_file` and
//! `public_tls_key_file`; `internal_tls_cert_file`, `internal_tls_key_file` and
//! `internal_tls_ca_file`): they are read and checked here, once, so that a missing,
//! unreadable or mismatched file stops the program naming its key (see `crate::tls`).

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4};
use std::num::{NonZeroU32, NonZeroUsize};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

pub use crate::tls::{InternalTls, PublicTls};
use crate::tls::{PemError, PemFile, Scheme};

/// Prefix of the environment variables read by [`Config::load`].
const ENV_PREFIX: &str = "SESSIONMESH_";
/// The environment variable naming the config file (the `--config` flag wins over it).
const ENV_CONFIG: &str = "SESSIONMESH_CONFIG";

/// Every key of the config file; `SESSIONMESH_<KEY>` and `--<key-with-dashes>` follow from it
/// (`seeds` is the exception on the command line: `--seed`, repeatable).
const KEYS: &[&str] = &[
    "node_id",
    "cluster_id",
    "public_addr",
    "internal_addr",
    "gossip_addr",
    "advertise_host",
    "seeds",
    "replication_factor",
    "vnodes",
    "session_ttl",
    "max_session_bytes",
    "cookie_name",
    "cookie_secure",
    "cookie_same_site",
    "cookie_secret",
    "cookie_secret_file",
    "cluster_secret",
    "cluster_secret_file",
    "api_token",
    "api_token_file",
    "gossip_interval",
    "dead_node_grace",
    "forward_timeout",
    "shutdown_grace",
    "log_format",
    "workers",
    "replication_timeout",
    "handoff_rate",
    "cookie_previous_secrets",
    "cookie_previous_secrets_file",
    "cluster_previous_secrets",
    "cluster_previous_secrets_file",
    "max_sessions",
    "max_header_bytes",
    "max_connections",
    "max_forwards",
    "request_timeout",
    "public_tls_cert_file",
    "public_tls_key_file",
    "internal_tls_cert_file",
    "internal_tls_key_file",
    "internal_tls_ca_file",
    "upstream",
    "upstream_timeout",
];

/// Secrets given directly, and the key that gives the same secret through a file.
const SECRET_KEYS: [(&str, &str); 5] = [
    ("cookie_secret", "cookie_secret_file"),
    ("cookie_previous_secrets", "cookie_previous_secrets_file"),
    ("cluster_previous_secrets", "cluster_previous_secrets_file"),
    ("cluster_secret", "cluster_secret_file"),
    ("api_token", "api_token_file"),
];

const MIN_SECRET_BYTES: usize = 16;
const MAX_ID_CHARS: usize = 128;
const MAX_VNODES: u32 = 4096;
const MIN_SESSION_BYTES: u64 = 1024;
/// Upper bound of every duration: far beyond any sensible setting, far below what would
/// overflow `Instant + Duration`.
const MAX_DURATION: Duration = Duration::from_secs(365 * 24 * 60 * 60);
const MAX_DURATION_TEXT: &str = "365d";

const DEFAULT_CLUSTER_ID: &str = "sessionmesh";
const DEFAULT_PUBLIC_ADDR: SocketAddr = loopback(8080);
const DEFAULT_INTERNAL_ADDR: SocketAddr = loopback(8081);
const DEFAULT_GOSSIP_ADDR: SocketAddr = loopback(7280);
const DEFAULT_REPLICATION_FACTOR: NonZeroUsize = NonZeroUsize::MIN.saturating_add(1);
const DEFAULT_VNODES: NonZeroU32 = NonZeroU32::MIN.saturating_add(127);
const DEFAULT_SESSION_TTL: Duration = Duration::from_secs(30 * 60);
const DEFAULT_MAX_SESSION_BYTES: usize = 64 * 1024;
const DEFAULT_COOKIE_NAME: &str = "SESSION";
const DEFAULT_GOSSIP_INTERVAL: Duration = Duration::from_millis(500);
const DEFAULT_DEAD_NODE_GRACE: Duration = Duration::from_secs(60);
const DEFAULT_FORWARD_TIMEOUT: Duration = Duration::from_secs(5);
const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
const DEFAULT_UPSTREAM_TIMEOUT: Duration = Duration::from_secs(30);

const fn loopback(port: u16) -> SocketAddr {
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, port))
}

/// Flags of the `serve` mode (the binary with no subcommand). All optional: what a flag leaves
/// unset comes from the environment, then the config file, then the defaults.
#[derive(clap::Args, Default, Clone)]
pub struct ServeArgs {
    /// TOML config file; the environment and flags override it [env: SESSIONMESH_CONFIG]
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Stable id of this node [default: the host name]
    #[arg(long, value_name = "ID")]
    pub node_id: Option<String>,
    /// Cluster name; members of another cluster are ignored [default: sessionmesh]
    #[arg(long, value_name = "ID")]
    pub cluster_id: Option<String>,
    /// Public HTTP listener, ip:port [default: 127.0.0.1:8080]
    #[arg(long, value_name = "IP:PORT")]
    pub public_addr: Option<String>,
    /// Internal HTTP listener for peers, ip:port [default: 127.0.0.1:8081]
    #[arg(long, value_name = "IP:PORT")]
    pub internal_addr: Option<String>,
    /// Gossip UDP socket, ip:port [default: 127.0.0.1:7280]
    #[arg(long, value_name = "IP:PORT")]
    pub gossip_addr: Option<String>,
    /// Host name or IP that peers dial [default: the host of each bind address]
    #[arg(long, value_name = "HOST")]
    pub advertise_host: Option<String>,
    /// Gossip address of a node to join, host:port; repeatable
    #[arg(long = "seed", value_name = "HOST:PORT")]
    pub seeds: Vec<String>,
    /// Copies of each session, owner included [default: 2]
    #[arg(long, value_name = "N")]
    pub replication_factor: Option<String>,
    /// Virtual nodes per node on the ring, 1 to 4096 [default: 128]
    #[arg(long, value_name = "N")]
    pub vnodes: Option<String>,
    /// Idle timeout of a session, sliding on access [default: 30m]
    #[arg(long, value_name = "DURATION")]
    pub session_ttl: Option<String>,
    /// Most bytes of data (compact JSON) one session may hold; a write whose result
    /// is larger, or a larger request body, gets 413 and changes nothing [default: 64KiB]
    #[arg(long, value_name = "SIZE")]
    pub max_session_bytes: Option<String>,
    /// Name of the session cookie [default: SESSION]
    #[arg(long, value_name = "NAME")]
    pub cookie_name: Option<String>,
    /// Mark the session cookie Secure (true or false) [default: true with public TLS, else false]
    #[arg(long, value_name = "BOOL")]
    pub cookie_secure: Option<String>,
    /// SameSite of the session cookie: strict, lax or none [default: lax]
    #[arg(long, value_name = "MODE")]
    pub cookie_same_site: Option<String>,
    /// Key that signs session cookies, at least 16 bytes; prefer --cookie-secret-file
    #[arg(long, value_name = "SECRET")]
    pub cookie_secret: Option<String>,
    /// File holding the cookie secret
    #[arg(long, value_name = "FILE")]
    pub cookie_secret_file: Option<String>,
    /// Secret shared by the nodes of the cluster, at least 16 bytes; prefer --cluster-secret-file
    #[arg(long, value_name = "SECRET")]
    pub cluster_secret: Option<String>,
    /// File holding the cluster secret
    #[arg(long, value_name = "FILE")]
    pub cluster_secret_file: Option<String>,
    /// Bearer token required by the id-addressed session API [default: none]
    #[arg(long, value_name = "TOKEN")]
    pub api_token: Option<String>,
    /// File holding the API token
    #[arg(long, value_name = "FILE")]
    pub api_token_file: Option<String>,
    /// Earlier cookie secrets, comma-separated: cookies they signed stay valid (key rotation)
    #[arg(long, value_name = "SECRETS")]
    pub cookie_previous_secrets: Option<String>,
    /// File holding the earlier cookie secrets, comma-separated
    #[arg(long, value_name = "FILE")]
    pub cookie_previous_secrets_file: Option<String>,
    /// Other cluster secrets accepted from peers, comma-separated (key rotation); cluster_secret signs
    #[arg(long, value_name = "SECRETS")]
    pub cluster_previous_secrets: Option<String>,
    /// File holding the other accepted cluster secrets, comma-separated
    #[arg(long, value_name = "FILE")]
    pub cluster_previous_secrets_file: Option<String>,
    /// Most sessions (and tombstones) one node holds; creations past it get 503 [default: 2000000]
    #[arg(long, value_name = "N")]
    pub max_sessions: Option<String>,
    /// Most bytes of request headers; more gets 431 [default: 16KiB]
    #[arg(long, value_name = "SIZE")]
    pub max_header_bytes: Option<String>,
    /// Most open connections per worker and listener [default: 25000]
    #[arg(long, value_name = "N")]
    pub max_connections: Option<String>,
    /// Most forwards in flight per worker; more gets 503 at once [default: 1024]
    #[arg(long, value_name = "N")]
    pub max_forwards: Option<String>,
    /// Bound on receiving a request's head and body [default: 10s]
    #[arg(long, value_name = "DURATION")]
    pub request_timeout: Option<String>,
    /// Time between gossip rounds, 10ms to 60s [default: 500ms]
    #[arg(long, value_name = "DURATION")]
    pub gossip_interval: Option<String>,
    /// How long a dead member is remembered before removal [default: 60s]
    #[arg(long, value_name = "DURATION")]
    pub dead_node_grace: Option<String>,
    /// Bound on a request forwarded to the owner [default: 5s]
    #[arg(long, value_name = "DURATION")]
    pub forward_timeout: Option<String>,
    /// Bound on a graceful leave [default: 10s]
    #[arg(long, value_name = "DURATION")]
    pub shutdown_grace: Option<String>,
    /// Log format: text or json [default: text]
    #[arg(long, value_name = "FORMAT")]
    pub log_format: Option<String>,
    /// HTTP worker threads per listener [default: number of CPUs]
    #[arg(long, value_name = "N")]
    pub workers: Option<String>,
    /// How long a write waits for a replica before using a stand-in [default: 2s]
    #[arg(long, value_name = "DURATION")]
    pub replication_timeout: Option<String>,
    /// Most session copies per second sent during a handoff [default: 20000]
    #[arg(long, value_name = "N")]
    pub handoff_rate: Option<String>,
    /// PEM certificate chain (leaf first) of the public listener; turns on HTTPS there
    #[arg(long, value_name = "FILE")]
    pub public_tls_cert_file: Option<String>,
    /// PEM private key of the public listener's certificate
    #[arg(long, value_name = "FILE")]
    pub public_tls_key_file: Option<String>,
    /// PEM certificate chain of this node on the internal listener and towards peers; turns on mutual TLS between nodes
    #[arg(long, value_name = "FILE")]
    pub internal_tls_cert_file: Option<String>,
    /// PEM private key of the internal certificate
    #[arg(long, value_name = "FILE")]
    pub internal_tls_key_file: Option<String>,
    /// PEM bundle of the CA certificates that issue the nodes' internal certificates
    #[arg(long, value_name = "FILE")]
    pub internal_tls_ca_file: Option<String>,
    /// Gateway mode: the application next to this node, like http://127.0.0.1:3000; requests
    /// outside /_sessionmesh/ go to the session owner's application [default: none]
    #[arg(long, value_name = "URL")]
    pub upstream: Option<String>,
    /// Gateway mode: bound on the application's answer head (and on each wait for its body) [default: 30s]
    #[arg(long, value_name = "DURATION")]
    pub upstream_timeout: Option<String>,
}

/// Written by hand so that secrets given as flags never reach a log line.
impl fmt::Debug for ServeArgs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let redacted = |secret: &Option<String>| secret.as_ref().map(|_| "***");
        f.debug_struct("ServeArgs")
            .field("config", &self.config)
            .field("node_id", &self.node_id)
            .field("cluster_id", &self.cluster_id)
            .field("public_addr", &self.public_addr)
            .field("internal_addr", &self.internal_addr)
            .field("gossip_addr", &self.gossip_addr)
            .field("advertise_host", &self.advertise_host)
            .field("seeds", &self.seeds)
            .field("replication_factor", &self.replication_factor)
            .field("vnodes", &self.vnodes)
            .field("session_ttl", &self.session_ttl)
            .field("max_session_bytes", &self.max_session_bytes)
            .field("cookie_name", &self.cookie_name)
            .field("cookie_secure", &self.cookie_secure)
            .field("cookie_same_site", &self.cookie_same_site)
            .field("cookie_secret", &redacted(&self.cookie_secret))
            .field("cookie_secret_file", &self.cookie_secret_file)
            .field("cluster_secret", &redacted(&self.cluster_secret))
            .field("cluster_secret_file", &self.cluster_secret_file)
            .field("api_token", &redacted(&self.api_token))
            .field("api_token_file", &self.api_token_file)
            .field(
                "cookie_previous_secrets",
                &redacted(&self.cookie_previous_secrets),
            )
            .field(
                "cookie_previous_secrets_file",
                &self.cookie_previous_secrets_file,
            )
            .field(
                "cluster_previous_secrets",
                &redacted(&self.cluster_previous_secrets),
            )
            .field(
                "cluster_previous_secrets_file",
                &self.cluster_previous_secrets_file,
            )
            .field("max_sessions", &self.max_sessions)
            .field("max_header_bytes", &self.max_header_bytes)
            .field("max_connections", &self.max_connections)
            .field("max_forwards", &self.max_forwards)
            .field("request_timeout", &self.request_timeout)
            .field("gossip_interval", &self.gossip_interval)
            .field("dead_node_grace", &self.dead_node_grace)
            .field("forward_timeout", &self.forward_timeout)
            .field("shutdown_grace", &self.shutdown_grace)
            .field("log_format", &self.log_format)
            .field("workers", &self.workers)
            .field("replication_timeout", &self.replication_timeout)
            .field("handoff_rate", &self.handoff_rate)
            .field("public_tls_cert_file", &self.public_tls_cert_file)
            .field("public_tls_key_file", &self.public_tls_key_file)
            .field("internal_tls_cert_file", &self.internal_tls_cert_file)
            .field("internal_tls_key_file", &self.internal_tls_key_file)
            .field("internal_tls_ca_file", &self.internal_tls_ca_file)
            .field("upstream", &self.upstream)
            .field("upstream_timeout", &self.upstream_timeout)
            .finish()
    }
}

/// The validated settings of one node. `Debug` redacts the secrets.
///
/// Usually loaded from flags, `SESSIONMESH_*` variables and a TOML file
/// ([`Config::load`]); every field can also be set in code:
///
/// ```
/// use std::time::Duration;
/// use sessionmesh::config::{Config, Secret};
///
/// let config = Config {
///     node_id: "web-1".to_owned(),
///     seeds: vec!["web-2:7280".to_owned()],
///     cookie_secret: Secret::new("a cookie secret of 16+ bytes"),
///     cluster_secret: Secret::new("a cluster secret of 16+ bytes"),
///     session_ttl: Duration::from_secs(3600),
///     ..Config::default()
/// };
/// assert_eq!(config.replication_factor.get(), 2);
/// ```
#[derive(Debug, Clone)]
pub struct Config {
    /// Stable across restarts; the host name by default.
    pub node_id: String,
    /// Members gossiping another cluster id are ignored.
    pub cluster_id: String,
    /// Bind address of the public HTTP listener.
    pub public_addr: SocketAddr,
    /// Bind address of the internal HTTP listener (peers only).
    pub internal_addr: SocketAddr,
    /// Bind address of the gossip UDP socket.
    pub gossip_addr: SocketAddr,
    /// Host that peers dial; `None` means the host of each bind address. An IPv6 address is
    /// kept without brackets; see [`Config::advertised_addr`].
    pub advertise_host: Option<String>,
    /// Gossip addresses to join, `host:port` (DNS names allowed, IPv6 in brackets).
    pub seeds: Vec<String>,
    /// Copies of each session, owner included.
    pub replication_factor: NonZeroUsize,
    /// Virtual nodes per node on the ring.
    pub vnodes: NonZeroU32,
    /// Idle timeout of a session, sliding on access.
    pub session_ttl: Duration,
    /// Most bytes of data one session holds (and largest body accepted).
    pub max_session_bytes: usize,
    /// A valid cookie name token.
    pub cookie_name: String,
    /// Whether the cookie carries `Secure` (sent over HTTPS only).
    pub cookie_secure: bool,
    /// The cookie's `SameSite` attribute.
    pub cookie_same_site: SameSite,
    /// Signs session cookies; at least 16 bytes.
    pub cookie_secret: Secret,
    /// Authenticates peers on the internal listener; at least 16 bytes.
    pub cluster_secret: Secret,
    /// Bearer token of the id-addressed session API; `None` means no token is needed.
    pub api_token: Option<Secret>,
    /// Most sessions (and tombstones) held by one node; creations past it get 503.
    pub max_sessions: usize,
    /// Most bytes of request headers on the public listener; more gets 431.
    pub max_header_bytes: usize,
    /// Most open connections per worker and listener.
    pub max_connections: usize,
    /// Most forwards in flight per worker; more gets 503 at once.
    pub max_forwards: usize,
    /// Bound on receiving a request's head and body.
    pub request_timeout: Duration,
    /// Earlier cookie secrets still accepted (newest first); cookies are always
    /// signed with `cookie_secret`.
    pub cookie_previous_secrets: Vec<Secret>,
    /// Other cluster secrets accepted from peers (gossip, internal requests,
    /// admission proofs) during a key rotation; everything this node sends is
    /// signed with `cluster_secret`.
    pub cluster_previous_secrets: Vec<Secret>,
    /// How often a node gossips.
    pub gossip_interval: Duration,
    /// How long a dead member is remembered before removal.
    pub dead_node_grace: Duration,
    /// Bound on a request forwarded to the owner.
    pub forward_timeout: Duration,
    /// Bound on a graceful leave.
    pub shutdown_grace: Duration,
    /// How log lines are written.
    pub log_format: LogFormat,
    /// HTTP worker threads per listener.
    pub workers: usize,
    /// How long a write waits for a replica before using a stand-in.
    pub replication_timeout: Duration,
    /// Most session copies per second sent during a handoff.
    pub handoff_rate: u32,
    /// HTTPS on the public listener; `None` serves plain HTTP.
    pub public_tls: Option<PublicTls>,
    /// Mutual TLS on the internal listener and on every request to a peer; `None`
    /// means plain HTTP between nodes.
    pub internal_tls: Option<InternalTls>,
    /// Gateway mode: the application instance next to this node. When set, public
    /// requests outside `/_sessionmesh/` are routed to their session's owner and
    /// proxied to its upstream (see `docs/gateway.md`).
    pub upstream: Option<Upstream>,
    /// Gateway mode: bound on the upstream's answer head, and on each wait for
    /// more of its body.
    pub upstream_timeout: Duration,
    /// True when `cookie_secret` or `cluster_secret` was missing and a throwaway one was
    /// generated (only allowed without seeds); the caller should warn.
    pub generated_secrets: bool,
}

/// The application a node proxies to in gateway mode: an `http://host:port`
/// origin (a name or an IP address; no path, query or credentials). TLS to
/// the application is not offered: it runs next to the node (same host, pod
/// or private network).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    /// `http://host:port`, without a trailing slash.
    origin: String,
}

impl Upstream {
    /// Parses `http://host[:port][/]`.
    ///
    /// ```
    /// use sessionmesh::config::Upstream;
    /// assert_eq!(Upstream::parse("http://127.0.0.1:3000/").unwrap().origin(), "http://127.0.0.1:3000");
    /// assert!(Upstream::parse("https://app:3000").is_err());
    /// assert!(Upstream::parse("http://app:3000/prefix").is_err());
    /// ```
    pub fn parse(text: &str) -> Result<Upstream, String> {
        let expected = || {
            "an http://host:port origin like http://127.0.0.1:3000 (no path, query or user)"
                .to_owned()
        };
        let rest = text.strip_prefix("http://").ok_or_else(expected)?;
        let authority = rest.strip_suffix('/').unwrap_or(rest);
        if authority.is_empty() || authority.contains(['/', '?', '#', '@', ' ']) {
            return Err(expected());
        }
        let (host, port) = match authority.strip_prefix('[') {
            // [v6]:port
            Some(bracketed) => {
                let (ip, after) = bracketed.split_once(']').ok_or_else(expected)?;
                let port = match after {
                    "" => None,
                    _ => Some(after.strip_prefix(':').ok_or_else(expected)?),
                };
                (&authority[..ip.len() + 2], port)
            }
            None => match authority.split_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (authority, None),
            },
        };
        if port.is_some_and(|p| p.parse::<u16>().map_or(true, |p| p == 0)) {
            return Err(expected());
        }
        parse_host(host).map_err(|_| expected())?;
        Ok(Upstream {
            origin: format!("http://{authority}"),
        })
    }

    /// `http://host:port`, without a trailing slash.
    pub fn origin(&self) -> &str {
        &self.origin
    }
}

impl fmt::Display for Upstream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.origin)
    }
}

/// The `SameSite` attribute of the session cookie.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SameSite {
    /// Sent on same-site requests only.
    Strict,
    /// Also sent on top-level navigations from other sites (the default).
    #[default]
    Lax,
    /// Sent on every request (needs `Secure`).
    None,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// Human-readable lines (coloured on a terminal).
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// Secret bytes: cheap to clone, never printed.
#[derive(Clone)]
pub struct Secret(Arc<[u8]>);

impl Secret {
    /// A secret of these bytes.
    pub fn new(bytes: impl Into<Vec<u8>>) -> Secret {
        Secret(bytes.into().into())
    }

    /// 32 random bytes from the thread-local CSPRNG.
    pub fn random() -> Secret {
        use rand::RngCore;
        let mut bytes = [0u8; 32];
        rand::rng().fill_bytes(&mut bytes);
        Secret::new(bytes)
    }

    /// The bytes, for keying a MAC.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// Where a setting came from, for error messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// The built-in default.
    Default,
    /// The host name, default of `node_id`.
    Hostname,
    /// The config file.
    File(PathBuf),
    /// An environment variable, by name.
    Env(String),
    /// A command-line flag, e.g. `--session-ttl`.
    Flag(String),
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Default => f.write_str("the default"),
            Origin::Hostname => f.write_str("the host name"),
            Origin::File(path) => write!(f, "config file {}", path.display()),
            Origin::Env(var) => f.write_str(var),
            Origin::Flag(flag) => f.write_str(flag),
        }
    }
}

/// Why the configuration was refused. Every message names the key (or variable) at fault.
#[derive(Debug, thiserror::Error)]
///
/// Its fields say what was wrong where: the key (`key`, or the environment
/// variable `var`), the file (`path`), which source set it (`origin`), and
/// what was expected.
#[allow(missing_docs)] // The fields are the message's parts, named as they read.
pub enum ConfigError {
    /// The config file could not be read.
    #[error("cannot read config file {}: {source}", path.display())]
    ReadFile {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The config file is not TOML.
    #[error("config file {} is not valid TOML: {source}", path.display())]
    ParseFile {
        path: PathBuf,
        source: Box<toml::de::Error>,
    },
    /// The config file names a key that does not exist.
    #[error("unknown key `{key}` in config file {}", path.display())]
    UnknownKey { key: String, path: PathBuf },
    /// A `SESSIONMESH_*` variable names a key that does not exist.
    #[error("unknown environment variable {var}")]
    UnknownEnv { var: String },
    /// A `SESSIONMESH_*` variable is not UTF-8.
    #[error("environment variable {var} is not valid UTF-8")]
    NotUnicode { var: String },
    /// A value is not what its key takes.
    #[error("invalid value for `{key}` (from {origin}): expected {expected}, got {got}")]
    Invalid {
        key: &'static str,
        origin: Origin,
        expected: String,
        got: String,
    },
    /// A secret's file could not be read.
    #[error("cannot read `{key}` {} (from {origin}): {source}", path.display())]
    SecretFile {
        key: &'static str,
        path: PathBuf,
        origin: Origin,
        source: std::io::Error,
    },
    /// A secret is given both directly and as a file.
    #[error(
        "both `{key}` (from {origin}) and `{file_key}` (from {file_origin}) are set: set only one"
    )]
    SecretTwice {
        key: &'static str,
        origin: Origin,
        file_key: &'static str,
        file_origin: Origin,
    },
    /// A secret that nodes of a cluster must share is missing.
    #[error("{key} is required when seeds are set: nodes of one cluster must share it (set `{key}` or `{key}_file`)")]
    MissingSecret { key: &'static str },
    /// Keys whose values do not go together.
    #[error("`{key}` {problem}")]
    Incompatible { key: &'static str, problem: String },
    /// A TLS file is unusable.
    #[error("unusable `{key}` {} (from {origin}): {problem}", path.display())]
    TlsFile {
        key: &'static str,
        path: PathBuf,
        origin: Origin,
        problem: String,
    },
}

impl Config {
    /// Parses the file (from `args.config`, else `SESSIONMESH_CONFIG`), then the process
    /// environment (`SESSIONMESH_*`), then the flags; later wins.
    pub fn load(args: &ServeArgs) -> Result<Config, ConfigError> {
        let mut env = Vec::new();
        for (name, value) in std::env::vars_os() {
            if !name.to_string_lossy().starts_with(ENV_PREFIX) {
                continue;
            }
            match (name.into_string(), value.into_string()) {
                (Ok(name), Ok(value)) => env.push((name, value)),
                (Ok(var), Err(_)) => return Err(ConfigError::NotUnicode { var }),
                (Err(name), _) => {
                    let var = name.to_string_lossy().into_owned();
                    return Err(ConfigError::NotUnicode { var });
                }
            }
        }
        Config::load_from(args, env)
    }

    /// Same as [`Config::load`], with an explicit environment (for tests and embedding).
    pub fn load_from(
        args: &ServeArgs,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let (env_file, env_layer) = Raw::from_env(env)?;
        let mut raw = Raw::default();
        if let Some(path) = args.config.as_ref().or(env_file.as_ref()) {
            raw.overlay(Raw::from_file(path)?);
        }
        raw.overlay(env_layer);
        raw.overlay(Raw::from_flags(args));
        Config::from_raw(raw)
    }

    /// The `host:port` that peers should dial for a listener bound to `bind` (pass the
    /// address actually bound, so that port 0 resolves to the real port):
    /// `advertise_host`, else the bind address, else (bound to all interfaces)
    /// this machine's host name.
    pub fn advertised_addr(&self, bind: SocketAddr) -> String {
        match &self.advertise_host {
            None if bind.ip().is_unspecified() => {
                format!(
                    "{}:{}",
                    gethostname::gethostname().to_string_lossy(),
                    bind.port()
                )
            }
            None => bind.to_string(),
            Some(host) if host.contains(':') => format!("[{host}]:{}", bind.port()),
            Some(host) => format!("{host}:{}", bind.port()),
        }
    }

    /// `https` when the public listener serves TLS, else `http`.
    pub fn public_scheme(&self) -> Scheme {
        match self.public_tls {
            Some(_) => Scheme::Https,
            None => Scheme::Http,
        }
    }

    /// `https` when nodes talk to each other over TLS, else `http`; see
    /// `PeerTransport`, which every node-to-node client goes through.
    pub fn internal_scheme(&self) -> Scheme {
        match self.internal_tls {
            Some(_) => Scheme::Https,
            None => Scheme::Http,
        }
    }

    fn from_raw(mut raw: Raw) -> Result<Config, ConfigError> {
        let node_id = match raw.parse("node_id", parse_id)? {
            Some(id) => id,
            None => default_node_id()?,
        };
        let cluster_id = raw
            .parse("cluster_id", parse_id)?
            .unwrap_or_else(|| DEFAULT_CLUSTER_ID.to_owned());
        let public_addr = raw
            .parse("public_addr", parse_socket_addr)?
            .unwrap_or(DEFAULT_PUBLIC_ADDR);
        let internal_addr = raw
            .parse("internal_addr", parse_socket_addr)?
            .unwrap_or(DEFAULT_INTERNAL_ADDR);
        let gossip_addr = raw
            .parse("gossip_addr", parse_socket_addr)?
            .unwrap_or(DEFAULT_GOSSIP_ADDR);
        let advertise_host = raw.parse("advertise_host", parse_host)?;
        let seeds = raw.seeds()?;
        let replication_factor = raw
            .parse("replication_factor", parse_replication_factor)?
            .unwrap_or(DEFAULT_REPLICATION_FACTOR);
        let vnodes = raw.parse("vnodes", parse_vnodes)?.unwrap_or(DEFAULT_VNODES);
        let session_ttl = raw
            .parse("session_ttl", duration_from(Duration::from_secs(1)))?
            .unwrap_or(DEFAULT_SESSION_TTL);
        let max_session_bytes = raw
            .parse("max_session_bytes", parse_size)?
            .unwrap_or(DEFAULT_MAX_SESSION_BYTES);
        let cookie_name = raw
            .parse("cookie_name", parse_cookie_name)?
            .unwrap_or_else(|| DEFAULT_COOKIE_NAME.to_owned());
        let cookie_secure = raw.parse("cookie_secure", parse_bool)?;
        let cookie_same_site = raw
            .parse("cookie_same_site", parse_same_site)?
            .unwrap_or_default();
        let cookie_secret = raw.secret("cookie_secret", MIN_SECRET_BYTES)?;
        let cluster_secret = raw.secret("cluster_secret", MIN_SECRET_BYTES)?;
        let api_token = raw.secret("api_token", 1)?;
        let cookie_previous_secrets = match raw.secret("cookie_previous_secrets", 1)? {
            None => Vec::new(),
            Some(list) => split_secrets("cookie_previous_secrets", list.expose())?,
        };
        let cluster_previous_secrets = match raw.secret("cluster_previous_secrets", 1)? {
            None => Vec::new(),
            Some(list) => split_secrets("cluster_previous_secrets", list.expose())?,
        };
        let gossip_interval = raw
            .parse("gossip_interval", parse_gossip_interval)?
            .unwrap_or(DEFAULT_GOSSIP_INTERVAL);
        let dead_node_grace = raw
            .parse("dead_node_grace", duration_from(Duration::from_secs(1)))?
            .unwrap_or(DEFAULT_DEAD_NODE_GRACE);
        let forward_timeout = raw
            .parse("forward_timeout", duration_from(Duration::from_millis(1)))?
            .unwrap_or(DEFAULT_FORWARD_TIMEOUT);
        let shutdown_grace = raw
            .parse("shutdown_grace", duration_from(Duration::from_millis(1)))?
            .unwrap_or(DEFAULT_SHUTDOWN_GRACE);
        let log_format = raw
            .parse("log_format", parse_log_format)?
            .unwrap_or_default();
        let workers = raw
            .parse("workers", parse_workers)?
            .unwrap_or_else(default_workers);
        let replication_timeout = raw
            .parse(
                "replication_timeout",
                duration_from(Duration::from_millis(10)),
            )?
            .unwrap_or(Duration::from_secs(2));
        let handoff_rate = raw
            .parse("handoff_rate", parse_handoff_rate)?
            .unwrap_or(20_000);
        let max_sessions = raw.parse("max_sessions", parse_count)?.unwrap_or(2_000_000);
        let max_header_bytes = raw
            .parse("max_header_bytes", parse_size)?
            .unwrap_or(16 * 1024);
        let max_connections = raw.parse("max_connections", parse_count)?.unwrap_or(25_000);
        let max_forwards = raw.parse("max_forwards", parse_count)?.unwrap_or(1024);
        let request_timeout = raw
            .parse("request_timeout", duration_from(Duration::from_millis(100)))?
            .unwrap_or(Duration::from_secs(10));
        let public_tls = raw.public_tls()?;
        let internal_tls = raw.internal_tls()?;
        let upstream = raw.parse("upstream", Upstream::parse)?;
        let upstream_timeout = raw
            .parse("upstream_timeout", duration_from(Duration::from_millis(1)))?
            .unwrap_or(DEFAULT_UPSTREAM_TIMEOUT);
        debug_assert!(raw.values.is_empty(), "unparsed keys: {:?}", raw.values);
        // Browsers that reach the node over HTTPS can be given Secure cookies.
        let cookie_secure = cookie_secure.unwrap_or(public_tls.is_some());

        if cookie_same_site == SameSite::None && !cookie_secure {
            return Err(ConfigError::Incompatible {
                key: "cookie_same_site",
                problem: "none requires `cookie_secure` = true: browsers drop SameSite=None cookies that are not Secure".to_owned(),
            });
        }
        if public_addr == internal_addr && public_addr.port() != 0 {
            return Err(ConfigError::Incompatible {
                key: "internal_addr",
                problem: format!("{internal_addr} is also `public_addr`: the two listeners need different addresses"),
            });
        }

        let single_node = seeds.is_empty();
        let generated_secrets = cookie_secret.is_none() || cluster_secret.is_none();
        let cookie_secret = secret_or_throwaway("cookie_secret", cookie_secret, single_node)?;
        let cluster_secret = secret_or_throwaway("cluster_secret", cluster_secret, single_node)?;

        Ok(Config {
            node_id,
            cluster_id,
            public_addr,
            internal_addr,
            gossip_addr,
            advertise_host,
            seeds,
            replication_factor,
            vnodes,
            session_ttl,
            max_session_bytes,
            cookie_name,
            cookie_secure,
            cookie_same_site,
            cookie_secret,
            cluster_secret,
            api_token,
            cookie_previous_secrets,
            cluster_previous_secrets,
            max_sessions,
            max_header_bytes,
            max_connections,
            max_forwards,
            request_timeout,
            gossip_interval,
            dead_node_grace,
            forward_timeout,
            shutdown_grace,
            log_format,
            workers,
            replication_timeout,
            handoff_rate,
            public_tls,
            internal_tls,
            upstream,
            upstream_timeout,
            generated_secrets,
        })
    }
}

/// All defaults, with freshly generated throwaway secrets (`generated_secrets` is true).
impl Default for Config {
    fn default() -> Config {
        let args = ServeArgs::default();
        // Only the host name can make the defaults invalid; fall back to a fixed node id then.
        Config::load_from(&args, [])
            .or_else(|_| {
                let args = ServeArgs {
                    node_id: Some("localhost".to_owned()),
                    ..args
                };
                Config::load_from(&args, [])
            })
            .expect("the built-in defaults are valid")
    }
}

fn default_node_id() -> Result<String, ConfigError> {
    let hostname = gethostname::gethostname().to_string_lossy().into_owned();
    parse_id(&hostname).map_err(|expected| ConfigError::Invalid {
        key: "node_id",
        origin: Origin::Hostname,
        expected,
        got: format!("{hostname:?}"),
    })
}

fn secret_or_throwaway(
    key: &'static str,
    secret: Option<Secret>,
    single_node: bool,
) -> Result<Secret, ConfigError> {
    match secret {
        Some(secret) => Ok(secret),
        None if single_node => Ok(Secret::random()),
        None => Err(ConfigError::MissingSecret { key }),
    }
}

/// Raw text of the settings, per key, with where each came from: one layer, or several
/// layers merged. Parsing a key removes it, so that each is parsed once.
#[derive(Debug, Default)]
struct Raw {
    values: BTreeMap<&'static str, (String, Origin)>,
    seeds: Option<(Vec<String>, Origin)>,
}

impl Raw {
    /// Reads the config file. Relative `*_file` paths in it are relative to its directory.
    fn from_file(path: &Path) -> Result<Raw, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::ReadFile {
            path: path.to_path_buf(),
            source,
        })?;
        let table: toml::Table = text.parse().map_err(|source| ConfigError::ParseFile {
            path: path.to_path_buf(),
            source: Box::new(source),
        })?;
        let origin = Origin::File(path.to_path_buf());
        let mut raw = Raw::default();
        for (name, value) in table {
            let Some(key) = known_key(&name) else {
                return Err(ConfigError::UnknownKey {
                    key: name,
                    path: path.to_path_buf(),
                });
            };
            let wrong_type = |expected: &str, got: &toml::Value| ConfigError::Invalid {
                key,
                origin: origin.clone(),
                expected: expected.to_owned(),
                got: format!("a TOML {}", got.type_str()),
            };
            if key == "seeds" {
                let seeds = match value {
                    toml::Value::String(list) => split_list(&list),
                    toml::Value::Array(items) => items
                        .into_iter()
                        .map(|item| match item {
                            toml::Value::String(seed) => Ok(seed),
                            other => Err(wrong_type("an array of \"host:port\" strings", &other)),
                        })
                        .collect::<Result<_, _>>()?,
                    other => return Err(wrong_type("an array of \"host:port\" strings", &other)),
                };
                raw.seeds = Some((seeds, origin.clone()));
                continue;
            }
            let text = match value {
                toml::Value::String(text) => text,
                toml::Value::Integer(n) => n.to_string(),
                toml::Value::Float(x) => x.to_string(),
                toml::Value::Boolean(b) => b.to_string(),
                other => return Err(wrong_type("a string, number or boolean", &other)),
            };
            let text = match path.parent() {
                Some(dir) if key.ends_with("_file") => {
                    dir.join(text.trim()).to_string_lossy().into_owned()
                }
                _ => text,
            };
            raw.values.insert(key, (text, origin.clone()));
        }
        Ok(raw)
    }

    /// Picks the `SESSIONMESH_*` variables; returns the config file they name, if any.
    fn from_env(
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<(Option<PathBuf>, Raw), ConfigError> {
        let mut config_file = None;
        let mut raw = Raw::default();
        for (var, value) in env {
            let Some(suffix) = var.strip_prefix(ENV_PREFIX) else {
                continue;
            };
            if var == ENV_CONFIG {
                config_file = Some(PathBuf::from(value));
                continue;
            }
            let Some(&key) = KEYS.iter().find(|key| key.to_ascii_uppercase() == suffix) else {
                return Err(ConfigError::UnknownEnv { var });
            };
            if key == "seeds" {
                raw.seeds = Some((split_list(&value), Origin::Env(var)));
            } else {
                raw.values.insert(key, (value, Origin::Env(var)));
            }
        }
        Ok((config_file, raw))
    }

    fn from_flags(args: &ServeArgs) -> Raw {
        // Destructured so that a new field cannot be forgotten here.
        let ServeArgs {
            config: _,
            node_id,
            cluster_id,
            public_addr,
            internal_addr,
            gossip_addr,
            advertise_host,
            seeds,
            replication_factor,
            vnodes,
            session_ttl,
            max_session_bytes,
            cookie_name,
            cookie_secure,
            cookie_same_site,
            cookie_secret,
            cookie_secret_file,
            cluster_secret,
            cluster_secret_file,
            api_token,
            api_token_file,
            cookie_previous_secrets,
            cookie_previous_secrets_file,
            cluster_previous_secrets,
            cluster_previous_secrets_file,
            max_sessions,
            max_header_bytes,
            max_connections,
            max_forwards,
            request_timeout,
            gossip_interval,
            dead_node_grace,
            forward_timeout,
            shutdown_grace,
            log_format,
            workers,
            replication_timeout,
            handoff_rate,
            public_tls_cert_file,
            public_tls_key_file,
            internal_tls_cert_file,
            internal_tls_key_file,
            internal_tls_ca_file,
            upstream,
            upstream_timeout,
        } = args;
        let flags = [
            ("node_id", node_id),
            ("cluster_id", cluster_id),
            ("public_addr", public_addr),
            ("internal_addr", internal_addr),
            ("gossip_addr", gossip_addr),
            ("advertise_host", advertise_host),
            ("replication_factor", replication_factor),
            ("vnodes", vnodes),
            ("session_ttl", session_ttl),
            ("max_session_bytes", max_session_bytes),
            ("cookie_name", cookie_name),
            ("cookie_secure", cookie_secure),
            ("cookie_same_site", cookie_same_site),
            ("cookie_secret", cookie_secret),
            ("cookie_secret_file", cookie_secret_file),
            ("cluster_secret", cluster_secret),
            ("cluster_secret_file", cluster_secret_file),
            ("api_token", api_token),
            ("api_token_file", api_token_file),
            ("cookie_previous_secrets", cookie_previous_secrets),
            ("cookie_previous_secrets_file", cookie_previous_secrets_file),
            ("cluster_previous_secrets", cluster_previous_secrets),
            (
                "cluster_previous_secrets_file",
                cluster_previous_secrets_file,
            ),
            ("max_sessions", max_sessions),
            ("max_header_bytes", max_header_bytes),
            ("max_connections", max_connections),
            ("max_forwards", max_forwards),
            ("request_timeout", request_timeout),
            ("gossip_interval", gossip_interval),
            ("dead_node_grace", dead_node_grace),
            ("forward_timeout", forward_timeout),
            ("shutdown_grace", shutdown_grace),
            ("log_format", log_format),
            ("workers", workers),
            ("replication_timeout", replication_timeout),
            ("handoff_rate", handoff_rate),
            ("public_tls_cert_file", public_tls_cert_file),
            ("public_tls_key_file", public_tls_key_file),
            ("internal_tls_cert_file", internal_tls_cert_file),
            ("internal_tls_key_file", internal_tls_key_file),
            ("internal_tls_ca_file", internal_tls_ca_file),
            ("upstream", upstream),
            ("upstream_timeout", upstream_timeout),
        ];
        let mut raw = Raw::default();
        for (key, value) in flags {
            if let Some(value) = value {
                let flag = format!("--{}", key.replace('_', "-"));
                raw.values.insert(key, (value.clone(), Origin::Flag(flag)));
            }
        }
        if !seeds.is_empty() {
            let seeds = seeds.iter().map(|seed| seed.trim().to_owned()).collect();
            raw.seeds = Some((seeds, Origin::Flag("--seed".to_owned())));
        }
        raw
    }

    /// Lays a later layer over this one. A secret set in the later layer, directly or through
    /// a file, replaces both forms from earlier layers.
    fn overlay(&mut self, later: Raw) {
        for key in later.values.keys() {
            if let Some(sibling) = secret_sibling(key) {
                self.values.remove(sibling);
            }
        }
        self.values.extend(later.values);
        if later.seeds.is_some() {
            self.seeds = later.seeds;
        }
    }

    fn parse<T>(
        &mut self,
        key: &'static str,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> Result<Option<T>, ConfigError> {
        let Some((text, origin)) = self.values.remove(key) else {
            return Ok(None);
        };
        parse(text.trim())
            .map(Some)
            .map_err(|expected| ConfigError::Invalid {
                key,
                origin,
                expected,
                got: format!("{text:?}"),
            })
    }

    fn seeds(&mut self) -> Result<Vec<String>, ConfigError> {
        let Some((seeds, origin)) = self.seeds.take() else {
            return Ok(Vec::new());
        };
        for seed in &seeds {
            check_seed(seed).map_err(|expected| ConfigError::Invalid {
                key: "seeds",
                origin: origin.clone(),
                expected,
                got: format!("{seed:?}"),
            })?;
        }
        Ok(seeds)
    }

    /// The secret `key`, given directly or through `<key>_file`; trailing newlines are removed.
    /// Error messages give lengths, never the secret.
    fn secret(&mut self, key: &'static str, min_len: usize) -> Result<Option<Secret>, ConfigError> {
        let file_key = secret_sibling(key).unwrap_or(key);
        let (bytes, key, origin, place) =
            match (self.values.remove(key), self.values.remove(file_key)) {
                (None, None) => return Ok(None),
                (Some((_, origin)), Some((_, file_origin))) => {
                    return Err(ConfigError::SecretTwice {
                        key,
                        origin,
                        file_key,
                        file_origin,
                    })
                }
                (Some((text, origin)), None) => (text.into_bytes(), key, origin, String::new()),
                (None, Some((path, origin))) => {
                    let path = PathBuf::from(path.trim());
                    let bytes = std::fs::read(&path).map_err(|source| ConfigError::SecretFile {
                        key: file_key,
                        path: path.clone(),
                        origin: origin.clone(),
                        source,
                    })?;
                    (bytes, file_key, origin, format!(" in {}", path.display()))
                }
            };
        let secret = trim_trailing_newlines(&bytes);
        if secret.len() < min_len {
            let expected = if min_len > 1 {
                format!("a secret of at least {min_len} bytes")
            } else {
                "a non-empty secret".to_owned()
            };
            return Err(ConfigError::Invalid {
                key,
                origin,
                expected,
                got: format!("{} bytes{place}", secret.len()),
            });
        }
        Ok(Some(Secret::new(secret)))
    }
}

/// A file given by `key`, for reading later, with where it was set.
struct GivenFile {
    key: &'static str,
    path: PathBuf,
    origin: Origin,
}

impl Raw {
    /// The path given for `key` (a `*_file` key that is not a secret), if any.
    fn file(&mut self, key: &'static str) -> Result<Option<GivenFile>, ConfigError> {
        let Some((text, origin)) = self.values.remove(key) else {
            return Ok(None);
        };
        let path = text.trim();
        if path.is_empty() {
            return Err(ConfigError::Invalid {
                key,
                origin,
                expected: "a file path".to_owned(),
                got: format!("{text:?}"),
            });
        }
        Ok(Some(GivenFile {
            key,
            path: PathBuf::from(path),
            origin,
        }))
    }

    /// `public_tls_cert_file` and `public_tls_key_file`: both or neither.
    fn public_tls(&mut self) -> Result<Option<PublicTls>, ConfigError> {
        let cert = self.file("public_tls_cert_file")?;
        let key = self.file("public_tls_key_file")?;
        let (cert, key) = match (cert, key) {
            (None, None) => return Ok(None),
            (Some(cert), Some(key)) => (cert, key),
            (Some(given), None) => return Err(required("public_tls_key_file", &given)),
            (None, Some(given)) => return Err(required("public_tls_cert_file", &given)),
        };
        PublicTls::from_pem_files(&cert.path, &key.path)
            .map(Some)
            .map_err(|error| tls_file_error(error, &cert, &key, None))
    }

    /// `internal_tls_cert_file`, `internal_tls_key_file` and `internal_tls_ca_file`:
    /// all three or none.
    fn internal_tls(&mut self) -> Result<Option<InternalTls>, ConfigError> {
        let cert = self.file("internal_tls_cert_file")?;
        let key = self.file("internal_tls_key_file")?;
        let ca = self.file("internal_tls_ca_file")?;
        let (cert, key, ca) = match (cert, key, ca) {
            (None, None, None) => return Ok(None),
            (Some(cert), Some(key), Some(ca)) => (cert, key, ca),
            (cert, key, ca) => {
                let names = [
                    "internal_tls_cert_file",
                    "internal_tls_key_file",
                    "internal_tls_ca_file",
                ];
                let files = [cert, key, ca];
                let missing = names
                    .iter()
                    .zip(&files)
                    .find_map(|(name, file)| file.is_none().then_some(*name));
                let given = files.iter().flatten().next();
                return match (missing, given) {
                    (Some(missing), Some(given)) => Err(required(missing, given)),
                    _ => Ok(None),
                };
            }
        };
        InternalTls::from_pem_files(&cert.path, &key.path, &ca.path)
            .map(Some)
            .map_err(|error| tls_file_error(error, &cert, &key, Some(&ca)))
    }
}

fn required(missing: &'static str, given: &GivenFile) -> ConfigError {
    ConfigError::Incompatible {
        key: missing,
        problem: format!(
            "is required when `{}` is set (from {})",
            given.key, given.origin
        ),
    }
}

/// The error for a TLS file, naming the key of the file at fault.
fn tls_file_error(
    error: PemError,
    cert: &GivenFile,
    key: &GivenFile,
    ca: Option<&GivenFile>,
) -> ConfigError {
    let file = match (error.file, ca) {
        (PemFile::Cert, _) => cert,
        (PemFile::Key, _) => key,
        (PemFile::Ca, Some(ca)) => ca,
        (PemFile::Ca, None) => cert,
    };
    ConfigError::TlsFile {
        key: file.key,
        path: file.path.clone(),
        origin: file.origin.clone(),
        problem: error.problem,
    }
}

fn known_key(name: &str) -> Option<&'static str> {
    KEYS.iter().copied().find(|key| *key == name)
}

/// `cookie_secret` ↔ `cookie_secret_file`, and so on.
fn secret_sibling(key: &str) -> Option<&'static str> {
    SECRET_KEYS.iter().find_map(|&(direct, file)| {
        if key == direct {
            Some(file)
        } else if key == file {
            Some(direct)
        } else {
            None
        }
    })
}

/// A comma-separated list: items trimmed, empty items skipped.
fn split_list(list: &str) -> Vec<String> {
    list.split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
        .map(str::to_owned)
        .collect()
}

fn trim_trailing_newlines(mut bytes: &[u8]) -> &[u8] {
    while let [rest @ .., b'\n' | b'\r'] = bytes {
        bytes = rest;
    }
    bytes
}

// Parsers: each returns the value, or what was expected (the error names key, source and value).

fn parse_id(text: &str) -> Result<String, String> {
    let valid = !text.is_empty()
        && text.chars().count() <= MAX_ID_CHARS
        && !text.chars().any(|c| c.is_whitespace() || c.is_control());
    if valid {
        Ok(text.to_owned())
    } else {
        Err(format!("a non-empty name of at most {MAX_ID_CHARS} characters without spaces or control characters"))
    }
}

fn parse_socket_addr(text: &str) -> Result<SocketAddr, String> {
    text.parse()
        .map_err(|_| "an ip:port socket address like 127.0.0.1:8080 or [::1]:8080".to_owned())
}

/// A DNS name or an IP address, without port; an IPv6 address is returned without brackets.
fn parse_host(text: &str) -> Result<String, String> {
    let unbracketed = text
        .strip_prefix('[')
        .and_then(|inner| inner.strip_suffix(']'));
    if let Some(ip) = unbracketed.and_then(|inner| inner.parse::<Ipv6Addr>().ok()) {
        return Ok(ip.to_string());
    }
    if text.parse::<IpAddr>().is_ok() || is_dns_name(text) {
        return Ok(text.to_owned());
    }
    Err("a host name or IP address, without port".to_owned())
}

fn is_dns_name(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= 253
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'))
}

/// `host:port` with a DNS name, an IPv4 address or a bracketed IPv6 address, and a port above 0.
fn check_seed(seed: &str) -> Result<(), String> {
    let expected = || "host:port with a numeric port, like node2:7280 or 10.0.0.2:7280".to_owned();
    let (host, port) = seed.rsplit_once(':').ok_or_else(expected)?;
    let port_ok = port.parse::<u16>().is_ok_and(|port| port != 0);
    let host_ok = match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        Some(ipv6) => ipv6.parse::<Ipv6Addr>().is_ok(),
        None => is_dns_name(host),
    };
    if port_ok && host_ok {
        Ok(())
    } else {
        Err(expected())
    }
}

fn parse_replication_factor(text: &str) -> Result<NonZeroUsize, String> {
    text.parse()
        .map_err(|_| "an integer of at least 1".to_owned())
}

fn parse_workers(text: &str) -> Result<usize, String> {
    text.parse::<usize>()
        .ok()
        .filter(|n| (1..=256).contains(n))
        .ok_or_else(|| "an integer between 1 and 256".to_owned())
}

/// Splits a comma-separated list of secrets; each must have `MIN_SECRET_BYTES`.
fn split_secrets(key: &'static str, list: &[u8]) -> Result<Vec<Secret>, ConfigError> {
    list.split(|b| *b == b',')
        .map(|part| part.trim_ascii())
        .filter(|part| !part.is_empty())
        .map(|part| {
            if part.len() < MIN_SECRET_BYTES {
                Err(ConfigError::Invalid {
                    key,
                    origin: Origin::Default,
                    expected: format!(
                        "comma-separated secrets of at least {MIN_SECRET_BYTES} bytes each"
                    ),
                    got: format!("one of {} bytes", part.len()),
                })
            } else {
                Ok(Secret::new(part.to_vec()))
            }
        })
        .collect()
}

fn parse_count(text: &str) -> Result<usize, String> {
    text.parse::<usize>()
        .ok()
        .filter(|n| *n >= 1)
        .ok_or_else(|| "a whole number, at least 1".to_owned())
}

fn parse_handoff_rate(text: &str) -> Result<u32, String> {
    text.parse::<u32>()
        .ok()
        .filter(|n| *n >= 1)
        .ok_or_else(|| "a whole number of copies per second, at least 1".to_owned())
}

fn default_workers() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

fn parse_vnodes(text: &str) -> Result<NonZeroU32, String> {
    text.parse::<NonZeroU32>()
        .ok()
        .filter(|n| n.get() <= MAX_VNODES)
        .ok_or_else(|| format!("an integer between 1 and {MAX_VNODES}"))
}

fn parse_duration(
    text: &str,
    min: Duration,
    max: Duration,
    max_text: &str,
) -> Result<Duration, String> {
    let duration =
        humantime::parse_duration(text).map_err(|_| "a duration like 30m or 500ms".to_owned())?;
    if (min..=max).contains(&duration) {
        Ok(duration)
    } else {
        Err(format!(
            "a duration between {} and {max_text}",
            humantime::format_duration(min)
        ))
    }
}

/// A duration of at least `min` (and at most a year).
fn duration_from(min: Duration) -> impl FnOnce(&str) -> Result<Duration, String> {
    move |text| parse_duration(text, min, MAX_DURATION, MAX_DURATION_TEXT)
}

fn parse_gossip_interval(text: &str) -> Result<Duration, String> {
    parse_duration(
        text,
        Duration::from_millis(10),
        Duration::from_secs(60),
        "60s",
    )
}

fn parse_size(text: &str) -> Result<usize, String> {
    let size = text
        .parse::<bytesize::ByteSize>()
        .map_err(|_| "a size like 64KiB or 1MB (a plain number is bytes)".to_owned())?;
    if size.as_u64() < MIN_SESSION_BYTES {
        return Err("a size of at least 1KiB".to_owned());
    }
    usize::try_from(size.as_u64()).map_err(|_| "a size that fits in memory".to_owned())
}

fn parse_cookie_name(text: &str) -> Result<String, String> {
    // RFC 6265: a cookie name is an RFC 7230 token.
    let is_tchar = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
    if !text.is_empty() && text.chars().all(is_tchar) {
        Ok(text.to_owned())
    } else {
        Err("a cookie name: letters, digits and !#$%&'*+-.^_`|~ only".to_owned())
    }
}

fn parse_bool(text: &str) -> Result<bool, String> {
    if text.eq_ignore_ascii_case("true") {
        Ok(true)
    } else if text.eq_ignore_ascii_case("false") {
        Ok(false)
    } else {
        Err("true or false".to_owned())
    }
}

fn parse_same_site(text: &str) -> Result<SameSite, String> {
    match text.to_ascii_lowercase().as_str() {
        "strict" => Ok(SameSite::Strict),
        "lax" => Ok(SameSite::Lax),
        "none" => Ok(SameSite::None),
        _ => Err("strict, lax or none".to_owned()),
    }
}

fn parse_log_format(text: &str) -> Result<LogFormat, String> {
    match text.to_ascii_lowercase().as_str() {
        "text" => Ok(LogFormat::Text),
        "json" => Ok(LogFormat::Json),
        _ => Err("text or json".to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    const SECRET_A: &str = "0123456789abcdef-cookie";
    const SECRET_B: &str = "0123456789abcdef-cluster";

    /// A directory under the system temp dir, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new() -> TempDir {
            static NEXT: AtomicUsize = AtomicUsize::new(0);
            let name = format!(
                "sessionmesh-config-test-{}-{}",
                std::process::id(),
                NEXT.fetch_add(1, Ordering::Relaxed)
            );
            let path = std::env::temp_dir().join(name);
            std::fs::create_dir_all(&path).expect("create temp dir");
            TempDir(path)
        }

        fn write(&self, name: &str, content: &str) -> PathBuf {
            let path = self.0.join(name);
            std::fs::write(&path, content).expect("write temp file");
            path
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn env(vars: &[(&str, &str)]) -> Vec<(String, String)> {
        vars.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn load_env(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        Config::load_from(&ServeArgs::default(), env(vars))
    }

    fn load_toml(toml: &str) -> Result<Config, ConfigError> {
        let dir = TempDir::new();
        let args = ServeArgs {
            config: Some(dir.write("node.toml", toml)),
            ..ServeArgs::default()
        };
        Config::load_from(&args, [])
    }

    fn error_of(result: Result<Config, ConfigError>) -> String {
        match result {
            Ok(config) => panic!("expected an error, got {config:?}"),
            Err(error) => error.to_string(),
        }
    }

    #[test]
    fn defaults() {
        let config = Config::load_from(&ServeArgs::default(), []).expect("defaults load");
        let hostname = gethostname::gethostname().to_string_lossy().into_owned();
        assert_eq!(config.node_id, hostname);
        assert_eq!(config.cluster_id, "sessionmesh");
        assert_eq!(config.public_addr, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(config.internal_addr, "127.0.0.1:8081".parse().unwrap());
        assert_eq!(config.gossip_addr, "127.0.0.1:7280".parse().unwrap());
        assert_eq!(config.advertise_host, None);
        assert!(config.seeds.is_empty());
        assert_eq!(config.replication_factor.get(), 2);
        assert_eq!(config.vnodes.get(), 128);
        assert_eq!(config.session_ttl, Duration::from_secs(1800));
        assert_eq!(config.max_session_bytes, 65536);
        assert_eq!(config.cookie_name, "SESSION");
        assert!(!config.cookie_secure);
        assert_eq!(config.cookie_same_site, SameSite::Lax);
        assert_eq!(config.cookie_secret.expose().len(), 32);
        assert_eq!(config.cluster_secret.expose().len(), 32);
        assert_ne!(
            config.cookie_secret.expose(),
            config.cluster_secret.expose()
        );
        assert!(config.api_token.is_none());
        assert_eq!(config.gossip_interval, Duration::from_millis(500));
        assert_eq!(config.dead_node_grace, Duration::from_secs(60));
        assert_eq!(config.forward_timeout, Duration::from_secs(5));
        assert_eq!(config.shutdown_grace, Duration::from_secs(10));
        assert_eq!(config.log_format, LogFormat::Text);
        assert!(config.generated_secrets);

        let default = Config::default();
        assert!(default.generated_secrets);
        assert_eq!(default.session_ttl, config.session_ttl);
    }

    #[test]
    fn file_then_env_then_flags() {
        let dir = TempDir::new();
        let file = dir.write(
            "node.toml",
            r#"
                node_id = "from-file"
                cluster_id = "from-file"
                session_ttl = "10m"
                vnodes = 64
                cookie_secure = true
                max_session_bytes = 2048
            "#,
        );
        let args = ServeArgs {
            config: Some(file),
            session_ttl: Some("90s".into()),
            ..ServeArgs::default()
        };
        let vars = env(&[
            ("SESSIONMESH_CLUSTER_ID", "from-env"),
            ("SESSIONMESH_SESSION_TTL", "20m"),
            ("PATH", "/usr/bin"),
        ]);
        let config = Config::load_from(&args, vars).expect("layers load");
        assert_eq!(config.node_id, "from-file");
        assert_eq!(config.cluster_id, "from-env");
        assert_eq!(config.session_ttl, Duration::from_secs(90));
        assert_eq!(config.vnodes.get(), 64);
        assert!(config.cookie_secure);
        assert_eq!(config.max_session_bytes, 2048);
    }

    #[test]
    fn config_file_from_env_and_flag_wins() {
        let dir = TempDir::new();
        let from_env = dir.write("env.toml", "node_id = \"env-file\"");
        let from_flag = dir.write("flag.toml", "node_id = \"flag-file\"");
        let vars = [(
            ENV_CONFIG.to_owned(),
            from_env.to_string_lossy().into_owned(),
        )];
        let config = Config::load_from(&ServeArgs::default(), vars.clone()).unwrap();
        assert_eq!(config.node_id, "env-file");
        let args = ServeArgs {
            config: Some(from_flag),
            ..ServeArgs::default()
        };
        assert_eq!(Config::load_from(&args, vars).unwrap().node_id, "flag-file");
    }

    #[test]
    fn seeds_from_each_source() {
        let secrets = [
            ("SESSIONMESH_COOKIE_SECRET", SECRET_A),
            ("SESSIONMESH_CLUSTER_SECRET", SECRET_B),
        ];
        let args = ServeArgs {
            seeds: vec!["node2:7281".into(), "[::1]:7282".into()],
            ..ServeArgs::default()
        };
        let config = Config::load_from(&args, env(&secrets)).unwrap();
        assert_eq!(config.seeds, ["node2:7281", "[::1]:7282"]);

        let mut vars = secrets.to_vec();
        vars.push(("SESSIONMESH_SEEDS", " a.example:1 , ,10.0.0.2:7280,"));
        let config = load_env(&vars).unwrap();
        assert_eq!(config.seeds, ["a.example:1", "10.0.0.2:7280"]);

        let secrets_toml =
            format!("cookie_secret = \"{SECRET_A}\"\ncluster_secret = \"{SECRET_B}\"\n");
        let config =
            load_toml(&format!("{secrets_toml}seeds = [\"n1:7280\", \"n2:7280\"]")).unwrap();
        assert_eq!(config.seeds, ["n1:7280", "n2:7280"]);
        let config = load_toml(&format!("{secrets_toml}seeds = \"n1:7280,n2:7280\"")).unwrap();
        assert_eq!(config.seeds, ["n1:7280", "n2:7280"]);

        // A later layer replaces the list, and an empty variable clears it.
        let dir = TempDir::new();
        let args = ServeArgs {
            config: Some(dir.write("seeds.toml", "seeds = [\"n1:7280\"]")),
            ..ServeArgs::default()
        };
        let config = Config::load_from(&args, env(&[("SESSIONMESH_SEEDS", "")])).unwrap();
        assert!(config.seeds.is_empty());
    }

    #[test]
    fn bad_values_name_key_and_source() {
        let cases = [
            ("node_id", "has space"),
            ("node_id", ""),
            ("cluster_id", &"x".repeat(129)),
            ("cluster_id", "tab\there"),
            ("public_addr", "localhost:8080"),
            ("internal_addr", "127.0.0.1"),
            ("gossip_addr", "127.0.0.1:99999"),
            ("advertise_host", "host:80"),
            ("seeds", "node2"),
            ("seeds", "node2:http"),
            ("seeds", "node2:0"),
            ("seeds", "::1:7280"),
            ("replication_factor", "0"),
            ("replication_factor", "two"),
            ("vnodes", "0"),
            ("vnodes", "4097"),
            ("session_ttl", "banana"),
            ("session_ttl", "500ms"),
            ("max_session_bytes", "1000"),
            ("max_session_bytes", "lots"),
            ("cookie_name", "a b"),
            ("cookie_name", "a;b"),
            ("cookie_name", ""),
            ("cookie_secure", "yes"),
            ("cookie_same_site", "sometimes"),
            ("gossip_interval", "5ms"),
            ("gossip_interval", "61s"),
            ("dead_node_grace", "0s"),
            ("forward_timeout", "0"),
            ("shutdown_grace", "forever"),
            ("log_format", "xml"),
        ];
        for (key, value) in cases {
            let var = format!("SESSIONMESH_{}", key.to_ascii_uppercase());
            let message = error_of(load_env(&[(&var, value)]));
            assert!(message.contains(&format!("`{key}`")), "{message}");
            assert!(message.contains(&var), "{message}");
        }
        let message = error_of(load_env(&[("SESSIONMESH_SESSION_TTL", "banana")]));
        assert_eq!(
            message,
            "invalid value for `session_ttl` (from SESSIONMESH_SESSION_TTL): \
             expected a duration like 30m or 500ms, got \"banana\""
        );

        let args = ServeArgs {
            vnodes: Some("many".into()),
            ..ServeArgs::default()
        };
        let message = error_of(Config::load_from(&args, []));
        assert!(message.contains("`vnodes` (from --vnodes)"), "{message}");

        let message = error_of(load_toml("gossip_interval = \"2m\""));
        assert!(
            message.contains("`gossip_interval` (from config file "),
            "{message}"
        );
    }

    #[test]
    fn upstream_from_each_layer() {
        assert!(load_env(&[]).unwrap().upstream.is_none());
        assert_eq!(
            load_env(&[]).unwrap().upstream_timeout,
            Duration::from_secs(30)
        );
        let config = load_env(&[
            ("SESSIONMESH_UPSTREAM", "http://127.0.0.1:3000"),
            ("SESSIONMESH_UPSTREAM_TIMEOUT", "2s"),
        ])
        .unwrap();
        assert_eq!(config.upstream.unwrap().origin(), "http://127.0.0.1:3000");
        assert_eq!(config.upstream_timeout, Duration::from_secs(2));
        let config = load_toml("upstream = \"http://app:8000/\"").unwrap();
        assert_eq!(config.upstream.unwrap().origin(), "http://app:8000");
        let args = ServeArgs {
            upstream: Some("http://[::1]:3000".into()),
            ..ServeArgs::default()
        };
        let config = Config::load_from(&args, env(&[("SESSIONMESH_UPSTREAM", "http://x:1")]));
        assert_eq!(
            config.unwrap().upstream.unwrap().origin(),
            "http://[::1]:3000"
        );
        for bad in [
            "127.0.0.1:3000",
            "https://app:3000",
            "http://",
            "http://app:0",
            "http://app:port",
            "http://app:3000/path",
            "http://user@app:3000",
            "http://::1:3000",
            "http://[::1",
            "http://app?x=1",
        ] {
            let message = error_of(load_env(&[("SESSIONMESH_UPSTREAM", bad)]));
            assert!(
                message.contains("`upstream` (from SESSIONMESH_UPSTREAM)"),
                "{bad}: {message}"
            );
        }
        let message = error_of(load_env(&[("SESSIONMESH_UPSTREAM_TIMEOUT", "0")]));
        assert!(message.contains("`upstream_timeout`"), "{message}");
    }

    #[test]
    fn values_are_trimmed_and_case_insensitive() {
        let config = load_env(&[
            ("SESSIONMESH_COOKIE_SAME_SITE", "STRICT"),
            ("SESSIONMESH_LOG_FORMAT", "Json"),
            ("SESSIONMESH_SESSION_TTL", " 1h 30m "),
            ("SESSIONMESH_MAX_SESSION_BYTES", "1MB"),
            ("SESSIONMESH_ADVERTISE_HOST", "[::1]"),
            ("SESSIONMESH_PUBLIC_ADDR", "0.0.0.0:0"),
            ("SESSIONMESH_INTERNAL_ADDR", "[::1]:0"),
        ])
        .unwrap();
        assert_eq!(config.cookie_same_site, SameSite::Strict);
        assert_eq!(config.log_format, LogFormat::Json);
        assert_eq!(config.session_ttl, Duration::from_secs(5400));
        assert_eq!(config.max_session_bytes, 1_000_000);
        assert_eq!(config.advertise_host.as_deref(), Some("::1"));
        assert_eq!(config.public_addr.port(), 0);
        assert_eq!(
            config.advertised_addr("0.0.0.0:8081".parse().unwrap()),
            "[::1]:8081"
        );
    }

    #[test]
    fn advertised_addr_defaults_to_bind_address() {
        let mut config = Config::default();
        let bind: SocketAddr = "127.0.0.1:7280".parse().unwrap();
        assert_eq!(config.advertised_addr(bind), "127.0.0.1:7280");
        let any: SocketAddr = "0.0.0.0:7280".parse().unwrap();
        let host = gethostname::gethostname().to_string_lossy().into_owned();
        assert_eq!(
            config.advertised_addr(any),
            format!("{host}:7280"),
            "bound to all interfaces: the host name"
        );
        config.advertise_host = Some("node1.internal".into());
        assert_eq!(config.advertised_addr(bind), "node1.internal:7280");
    }

    #[test]
    fn unknown_keys_and_wrong_types() {
        let message = error_of(load_toml("foo = 1"));
        assert!(
            message.starts_with("unknown key `foo` in config file "),
            "{message}"
        );
        assert!(message.ends_with("node.toml"), "{message}");

        let message = error_of(load_env(&[("SESSIONMESH_FOO", "1")]));
        assert_eq!(message, "unknown environment variable SESSIONMESH_FOO");
        // The variable name must be upper case, like the documentation says.
        let message = error_of(load_env(&[("SESSIONMESH_node_id", "x")]));
        assert!(message.contains("SESSIONMESH_node_id"), "{message}");

        let message = error_of(load_toml("[vnodes]\nx = 1"));
        assert!(
            message.contains("`vnodes`") && message.contains("a TOML table"),
            "{message}"
        );
        let message = error_of(load_toml("node_id = [\"a\"]"));
        assert!(message.contains("`node_id`"), "{message}");
        let message = error_of(load_toml("seeds = [1, 2]"));
        assert!(message.contains("`seeds`"), "{message}");
        let message = error_of(load_toml("seeds = 7"));
        assert!(message.contains("`seeds`"), "{message}");

        let message = error_of(load_toml("node_id = "));
        assert!(message.contains("is not valid TOML"), "{message}");
        let args = ServeArgs {
            config: Some(PathBuf::from("/nonexistent/sessionmesh.toml")),
            ..ServeArgs::default()
        };
        let message = error_of(Config::load_from(&args, []));
        assert!(
            message.contains("/nonexistent/sessionmesh.toml"),
            "{message}"
        );
    }

    #[test]
    fn every_key_has_a_flag() {
        let command = <ServeArgs as clap::Args>::augment_args(clap::Command::new("test"));
        let mut flags: Vec<String> = command
            .get_arguments()
            .filter_map(|arg| arg.get_long().map(str::to_owned))
            .collect();
        flags.sort();
        let mut expected: Vec<String> = KEYS
            .iter()
            .map(|key| match *key {
                "seeds" => "seed".to_owned(),
                key => key.replace('_', "-"),
            })
            .chain(["config".to_owned()])
            .collect();
        expected.sort();
        assert_eq!(flags, expected);

        let matches = command
            .try_get_matches_from(["test", "--seed", "a:1", "--seed", "b:2", "--node-id", "n"])
            .unwrap();
        let args = <ServeArgs as clap::FromArgMatches>::from_arg_matches(&matches).unwrap();
        assert_eq!(args.seeds, ["a:1", "b:2"]);
        assert_eq!(args.node_id.as_deref(), Some("n"));
    }

    #[test]
    fn secrets_from_files() {
        let dir = TempDir::new();
        let cookie = dir.write("cookie", &format!("{SECRET_A}\n"));
        let cluster = dir.write("cluster", &format!("{SECRET_B}\r\n"));
        let token = dir.write("token", "t\n");
        let config = load_env(&[
            ("SESSIONMESH_COOKIE_SECRET_FILE", cookie.to_str().unwrap()),
            ("SESSIONMESH_CLUSTER_SECRET_FILE", cluster.to_str().unwrap()),
            ("SESSIONMESH_API_TOKEN_FILE", token.to_str().unwrap()),
            ("SESSIONMESH_SEEDS", "node2:7281"),
        ])
        .unwrap();
        assert_eq!(config.cookie_secret.expose(), SECRET_A.as_bytes());
        assert_eq!(config.cluster_secret.expose(), SECRET_B.as_bytes());
        assert_eq!(config.api_token.unwrap().expose(), b"t");
        assert!(!config.generated_secrets);

        // Relative paths in the config file are relative to the file's directory.
        let file = dir.write(
            "node.toml",
            "cookie_secret_file = \"cookie\"\ncluster_secret_file = \"cluster\"",
        );
        let args = ServeArgs {
            config: Some(file),
            ..ServeArgs::default()
        };
        let config = Config::load_from(&args, []).unwrap();
        assert_eq!(config.cookie_secret.expose(), SECRET_A.as_bytes());
        assert!(!config.generated_secrets);

        let message = error_of(load_env(&[(
            "SESSIONMESH_COOKIE_SECRET_FILE",
            "/nonexistent/cookie",
        )]));
        assert!(message.contains("`cookie_secret_file`"), "{message}");
        assert!(message.contains("/nonexistent/cookie"), "{message}");
    }

    #[test]
    fn secret_rules() {
        // Too short, never echoed.
        let message = error_of(load_env(&[("SESSIONMESH_CLUSTER_SECRET", "hunter2")]));
        assert!(message.contains("`cluster_secret`"), "{message}");
        assert!(!message.contains("hunter2"), "{message}");
        let dir = TempDir::new();
        let short = dir.write("short", "tiny\n");
        let message = error_of(load_env(&[(
            "SESSIONMESH_COOKIE_SECRET_FILE",
            short.to_str().unwrap(),
        )]));
        assert!(message.contains("`cookie_secret_file`"), "{message}");
        assert!(!message.contains("tiny"), "{message}");

        // api_token: any length but empty.
        let config = load_env(&[("SESSIONMESH_API_TOKEN", "abc")]).unwrap();
        assert_eq!(config.api_token.unwrap().expose(), b"abc");
        let message = error_of(load_env(&[("SESSIONMESH_API_TOKEN", "")]));
        assert!(message.contains("`api_token`"), "{message}");

        // Value and file in the same layer.
        let message = error_of(load_env(&[
            ("SESSIONMESH_COOKIE_SECRET", SECRET_A),
            ("SESSIONMESH_COOKIE_SECRET_FILE", "/x"),
        ]));
        assert!(
            message.contains("`cookie_secret`") && message.contains("`cookie_secret_file`"),
            "{message}"
        );

        // A later layer replaces the secret whichever form it takes.
        let secret = dir.write("secret", SECRET_B);
        let args = ServeArgs {
            config: Some(dir.write("node.toml", &format!("cookie_secret = \"{SECRET_A}\""))),
            ..ServeArgs::default()
        };
        let vars = env(&[("SESSIONMESH_COOKIE_SECRET_FILE", secret.to_str().unwrap())]);
        let config = Config::load_from(&args, vars).unwrap();
        assert_eq!(config.cookie_secret.expose(), SECRET_B.as_bytes());

        // Other cluster secrets: a comma-separated list, each long enough,
        // never echoed; the error names the key.
        let both = format!("{SECRET_A}, {SECRET_B}");
        let config = load_env(&[("SESSIONMESH_CLUSTER_PREVIOUS_SECRETS", &both)]).unwrap();
        let previous: Vec<&[u8]> = config
            .cluster_previous_secrets
            .iter()
            .map(Secret::expose)
            .collect();
        assert_eq!(previous, [SECRET_A.as_bytes(), SECRET_B.as_bytes()]);
        let short = format!("{SECRET_A},hunter2");
        let message = error_of(load_env(&[(
            "SESSIONMESH_CLUSTER_PREVIOUS_SECRETS",
            &short,
        )]));
        assert!(message.contains("`cluster_previous_secrets`"), "{message}");
        assert!(!message.contains("hunter2"), "{message}");
        assert!(load_env(&[]).unwrap().cluster_previous_secrets.is_empty());
    }

    #[test]
    fn missing_secrets_with_seeds_is_an_error() {
        let message = error_of(load_env(&[
            ("SESSIONMESH_SEEDS", "node2:7281"),
            ("SESSIONMESH_COOKIE_SECRET", SECRET_A),
        ]));
        assert!(
            message.starts_with(
                "cluster_secret is required when seeds are set: nodes of one cluster must share it"
            ),
            "{message}"
        );
        let message = error_of(load_env(&[
            ("SESSIONMESH_SEEDS", "node2:7281"),
            ("SESSIONMESH_CLUSTER_SECRET", SECRET_B),
        ]));
        assert!(
            message.starts_with("cookie_secret is required"),
            "{message}"
        );
    }

    #[test]
    fn missing_secrets_without_seeds_are_generated() {
        let config = load_env(&[("SESSIONMESH_COOKIE_SECRET", SECRET_A)]).unwrap();
        assert!(config.generated_secrets);
        assert_eq!(config.cookie_secret.expose(), SECRET_A.as_bytes());
        assert_eq!(config.cluster_secret.expose().len(), 32);

        let config = load_env(&[
            ("SESSIONMESH_COOKIE_SECRET", SECRET_A),
            ("SESSIONMESH_CLUSTER_SECRET", SECRET_B),
        ])
        .unwrap();
        assert!(!config.generated_secrets);
    }

    #[test]
    fn debug_redacts_secrets() {
        let config = load_env(&[
            ("SESSIONMESH_COOKIE_SECRET", SECRET_A),
            ("SESSIONMESH_CLUSTER_SECRET", SECRET_B),
            ("SESSIONMESH_API_TOKEN", "token-value"),
        ])
        .unwrap();
        let debug = format!("{config:?}");
        assert!(debug.contains("Secret(***)"), "{debug}");
        for secret in [SECRET_A, SECRET_B, "token-value"] {
            assert!(!debug.contains(secret), "{debug}");
        }
        let args = ServeArgs {
            cluster_secret: Some(SECRET_B.into()),
            ..ServeArgs::default()
        };
        assert!(!format!("{args:?}").contains(SECRET_B));
    }

    #[test]
    fn incompatible_settings() {
        let message = error_of(load_env(&[("SESSIONMESH_COOKIE_SAME_SITE", "none")]));
        assert!(message.contains("`cookie_same_site`"), "{message}");
        let config = load_env(&[
            ("SESSIONMESH_COOKIE_SAME_SITE", "none"),
            ("SESSIONMESH_COOKIE_SECURE", "true"),
        ])
        .unwrap();
        assert_eq!(config.cookie_same_site, SameSite::None);

        let message = error_of(load_env(&[("SESSIONMESH_INTERNAL_ADDR", "127.0.0.1:8080")]));
        assert!(message.contains("`internal_addr`"), "{message}");
    }

    /// PEM files: a CA, a certificate it issued for localhost and its key, a key
    /// of another certificate, and a certificate with its key from another CA.
    struct TestPki {
        ca: PathBuf,
        cert: PathBuf,
        key: PathBuf,
        other_key: PathBuf,
        stranger_cert: PathBuf,
        stranger_key: PathBuf,
    }

    fn test_pki(dir: &TempDir) -> TestPki {
        use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
        let ca = |dir: &TempDir, name: &str| {
            let key = KeyPair::generate().unwrap();
            let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            let cert = params.self_signed(&key).unwrap();
            dir.write(name, &cert.pem());
            Issuer::new(params, key)
        };
        let leaf = |issuer: &Issuer<'_, KeyPair>| {
            let key = KeyPair::generate().unwrap();
            let params = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
            let cert = params.signed_by(&key, issuer).unwrap();
            (cert.pem(), key.serialize_pem())
        };
        let issuer = ca(dir, "ca.pem");
        let (cert, key) = leaf(&issuer);
        let (_, other_key) = leaf(&issuer);
        let (stranger_cert, stranger_key) = leaf(&ca(dir, "stranger-ca.pem"));
        TestPki {
            ca: dir.0.join("ca.pem"),
            cert: dir.write("node.crt", &cert),
            key: dir.write("node.key", &key),
            other_key: dir.write("other.key", &other_key),
            stranger_cert: dir.write("stranger.crt", &stranger_cert),
            stranger_key: dir.write("stranger.key", &stranger_key),
        }
    }

    fn path(path: &Path) -> &str {
        path.to_str().unwrap()
    }

    #[test]
    fn tls_is_off_by_default_and_on_with_its_files() {
        let config = load_env(&[]).unwrap();
        assert!(config.public_tls.is_none() && config.internal_tls.is_none());
        assert_eq!(config.public_scheme(), Scheme::Http);
        assert_eq!(config.internal_scheme(), Scheme::Http);
        assert!(!config.cookie_secure);

        let dir = TempDir::new();
        let pki = test_pki(&dir);
        let config = load_env(&[
            ("SESSIONMESH_PUBLIC_TLS_CERT_FILE", path(&pki.cert)),
            ("SESSIONMESH_PUBLIC_TLS_KEY_FILE", path(&pki.key)),
        ])
        .unwrap();
        assert!(config.public_tls.is_some() && config.internal_tls.is_none());
        assert_eq!(config.public_scheme(), Scheme::Https);
        assert!(
            config.cookie_secure,
            "HTTPS makes Secure cookies the default"
        );
        assert!(!format!("{config:?}").contains("PRIVATE KEY"));

        // Relative paths in the file are relative to its directory; flags work too.
        let file = dir.write(
            "node.toml",
            "internal_tls_cert_file = \"node.crt\"\ninternal_tls_key_file = \"node.key\"\n\
             cookie_secure = false",
        );
        let args = ServeArgs {
            config: Some(file),
            internal_tls_ca_file: Some(path(&pki.ca).to_owned()),
            public_tls_cert_file: Some(path(&pki.cert).to_owned()),
            public_tls_key_file: Some(path(&pki.key).to_owned()),
            ..ServeArgs::default()
        };
        let config = Config::load_from(&args, []).unwrap();
        assert_eq!(config.internal_scheme(), Scheme::Https);
        assert_eq!(config.public_scheme(), Scheme::Https);
        assert!(!config.cookie_secure, "an explicit setting wins");
    }

    #[test]
    fn tls_errors_name_the_key() {
        let dir = TempDir::new();
        let pki = test_pki(&dir);
        let garbage = dir.write("garbage.pem", "not a certificate\n");
        let bad_base64 = dir.write(
            "bad.pem",
            "-----BEGIN CERTIFICATE-----\n!!!\n-----END CERTIFICATE-----\n",
        );
        let not_der = dir.write(
            "notder.pem",
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        );
        let (cert, key, ca) = (path(&pki.cert), path(&pki.key), path(&pki.ca));
        type Case<'a> = (Vec<(&'a str, &'a str)>, &'a str, &'a str);
        let cases: Vec<Case> = vec![
            (
                vec![("PUBLIC_TLS_CERT_FILE", cert)],
                "`public_tls_key_file` is required when `public_tls_cert_file` is set",
                "",
            ),
            (
                vec![("PUBLIC_TLS_KEY_FILE", key)],
                "`public_tls_cert_file` is required when `public_tls_key_file` is set",
                "",
            ),
            (
                vec![
                    ("INTERNAL_TLS_CERT_FILE", cert),
                    ("INTERNAL_TLS_KEY_FILE", key),
                ],
                "`internal_tls_ca_file` is required",
                "",
            ),
            (
                vec![("INTERNAL_TLS_CA_FILE", ca)],
                "`internal_tls_cert_file` is required",
                "",
            ),
            (
                vec![
                    ("PUBLIC_TLS_CERT_FILE", "/nonexistent/c.pem"),
                    ("PUBLIC_TLS_KEY_FILE", key),
                ],
                "unusable `public_tls_cert_file` /nonexistent/c.pem",
                "cannot read it",
            ),
            (
                vec![
                    ("PUBLIC_TLS_CERT_FILE", path(&garbage)),
                    ("PUBLIC_TLS_KEY_FILE", key),
                ],
                "unusable `public_tls_cert_file`",
                "no PEM certificate",
            ),
            (
                vec![
                    ("PUBLIC_TLS_CERT_FILE", path(&bad_base64)),
                    ("PUBLIC_TLS_KEY_FILE", key),
                ],
                "unusable `public_tls_cert_file`",
                "not valid PEM",
            ),
            (
                vec![
                    ("PUBLIC_TLS_CERT_FILE", path(&not_der)),
                    ("PUBLIC_TLS_KEY_FILE", key),
                ],
                "unusable `public_tls_cert_file`",
                "not a usable certificate",
            ),
            (
                vec![
                    ("PUBLIC_TLS_CERT_FILE", cert),
                    ("PUBLIC_TLS_KEY_FILE", path(&garbage)),
                ],
                "unusable `public_tls_key_file`",
                "no PEM private key",
            ),
            (
                vec![
                    ("PUBLIC_TLS_CERT_FILE", cert),
                    ("PUBLIC_TLS_KEY_FILE", cert),
                ],
                "unusable `public_tls_key_file`",
                "no PEM private key",
            ),
            (
                vec![
                    ("PUBLIC_TLS_CERT_FILE", cert),
                    ("PUBLIC_TLS_KEY_FILE", path(&pki.other_key)),
                ],
                "unusable `public_tls_key_file`",
                "does not match the certificate",
            ),
            (
                vec![("PUBLIC_TLS_CERT_FILE", " "), ("PUBLIC_TLS_KEY_FILE", key)],
                "invalid value for `public_tls_cert_file`",
                "a file path",
            ),
            (
                vec![
                    ("INTERNAL_TLS_CERT_FILE", cert),
                    ("INTERNAL_TLS_KEY_FILE", key),
                    ("INTERNAL_TLS_CA_FILE", path(&garbage)),
                ],
                "unusable `internal_tls_ca_file`",
                "no PEM certificate",
            ),
            (
                vec![
                    ("INTERNAL_TLS_CERT_FILE", cert),
                    ("INTERNAL_TLS_KEY_FILE", key),
                    ("INTERNAL_TLS_CA_FILE", path(&not_der)),
                ],
                "unusable `internal_tls_ca_file`",
                "not a usable CA certificate",
            ),
            (
                vec![
                    ("INTERNAL_TLS_CERT_FILE", path(&pki.stranger_cert)),
                    ("INTERNAL_TLS_KEY_FILE", path(&pki.stranger_key)),
                    ("INTERNAL_TLS_CA_FILE", ca),
                ],
                "unusable `internal_tls_cert_file`",
                "not accepted by the CA bundle",
            ),
            (
                vec![
                    ("INTERNAL_TLS_CERT_FILE", cert),
                    ("INTERNAL_TLS_KEY_FILE", path(&pki.other_key)),
                    ("INTERNAL_TLS_CA_FILE", ca),
                ],
                "unusable `internal_tls_key_file`",
                "does not match",
            ),
        ];
        for (vars, start, detail) in cases {
            let vars: Vec<(String, &str)> = vars
                .into_iter()
                .map(|(k, v)| (format!("SESSIONMESH_{k}"), v))
                .collect();
            let refs: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (k.as_str(), *v)).collect();
            let message = error_of(load_env(&refs));
            assert!(message.starts_with(start), "{vars:?}: {message}");
            assert!(message.contains(detail), "{vars:?}: {message}");
            assert!(
                message.contains("(from SESSIONMESH_"),
                "{vars:?}: {message}"
            );
        }
    }

    fn shipped(path: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
    }

    #[test]
    fn example_file_documents_every_key() {
        let path = shipped("config/sessionmesh.example.toml");
        let example = std::fs::read_to_string(&path).expect("read the example config");
        for key in KEYS {
            let env = format!("SESSIONMESH_{}", key.to_ascii_uppercase());
            assert!(
                example.contains(&format!("# {key} = ")),
                "{key} has no example line"
            );
            assert!(example.contains(&env), "{env} is not documented");
        }
        // Everything is commented out: the example loads as the defaults.
        let args = ServeArgs {
            config: Some(path),
            ..ServeArgs::default()
        };
        let config = Config::load_from(&args, []).expect("the example loads");
        assert_eq!(config.public_addr, DEFAULT_PUBLIC_ADDR);
    }

    #[test]
    fn local_cluster_configs() {
        let nodes: Vec<Config> = (1..=3)
            .map(|n| {
                let args = ServeArgs {
                    config: Some(shipped(&format!("config/local/node{n}.toml"))),
                    ..ServeArgs::default()
                };
                Config::load_from(&args, []).expect("a local node config loads")
            })
            .collect();
        let gossip: Vec<String> = nodes.iter().map(|c| c.gossip_addr.to_string()).collect();
        for (i, node) in nodes.iter().enumerate() {
            assert_eq!(node.node_id, format!("node{}", i + 1));
            assert_eq!(node.public_addr.port(), 8080 + 100 * i as u16);
            assert_eq!(node.internal_addr.port(), 8081 + 100 * i as u16);
            assert_eq!(node.gossip_addr.port(), 7280 + i as u16);
            let others: Vec<&String> = gossip.iter().filter(|g| **g != gossip[i]).collect();
            assert_eq!(node.seeds.iter().collect::<Vec<_>>(), others);
            assert!(!node.generated_secrets);
            assert_eq!(node.cluster_id, nodes[0].cluster_id);
            assert_eq!(node.cookie_secret.expose(), nodes[0].cookie_secret.expose());
            assert_eq!(
                node.cluster_secret.expose(),
                nodes[0].cluster_secret.expose()
            );
        }
    }
}
