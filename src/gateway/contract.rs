//! The header contract between a node and its application, as pure functions: which headers are reserved, how the session is handed over, how a change is read back, and what is applied.
//!
//! Every header named `X-Sessionmesh-*` belongs to sessionmesh: a client's
//! copies are removed before a request goes on, and the application's are
//! removed from its answer once read. See `docs/gateway.md` for the contract
//! as users read it.

use base64::engine::general_purpose::{URL_SAFE, URL_SAFE_NO_PAD};
use base64::Engine;
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use crate::protocol::Field;
use crate::session::SessionId;

/// Prefix of every header of the contract (compared in lower case).
pub const RESERVED_PREFIX: &str = "x-sessionmesh-";

/// Request: the session id; absent for a guest.
pub const SESSION_ID: &str = "x-sessionmesh-id";
/// Request: the session's version; absent for a guest.
pub const SESSION_VERSION: &str = "x-sessionmesh-version";
/// Request: the session data, a JSON object encoded base64url (padded);
/// `{}` for a guest; absent when it is over [`HEADER_BUDGET`].
pub const SESSION_DATA: &str = "x-sessionmesh-data";
/// Request: where the application reads the session when its data is over
/// [`HEADER_BUDGET`] (a URL of this node's public JSON API).
pub const SESSION_DATA_URL: &str = "x-sessionmesh-data-url";
/// Request: the node the request entered.
pub const ENTRY_NODE: &str = "x-sessionmesh-entry-node";

/// Response: replace the session data with this object (base64url JSON).
pub const REPLACE: &str = "x-sessionmesh-replace";
/// Response: apply this RFC 7386 merge patch (base64url JSON object).
pub const PATCH: &str = "x-sessionmesh-patch";
/// Response: delete the session and expire its cookie (logout).
pub const DELETE: &str = "x-sessionmesh-delete";
/// Response: move the session to a new id, same data (login, against
/// session fixation).
pub const RENEW: &str = "x-sessionmesh-renew";

/// Most bytes of the encoded [`SESSION_DATA`] value. Larger sessions are
/// not truncated: the application gets [`SESSION_DATA_URL`] instead.
pub const HEADER_BUDGET: usize = 8 * 1024;

/// Whether a header name belongs to the contract (never taken from a client,
/// never passed on from an application).
pub fn is_reserved(name: &str) -> bool {
    name.len() >= RESERVED_PREFIX.len()
        && name.as_bytes()[..RESERVED_PREFIX.len()].eq_ignore_ascii_case(RESERVED_PREFIX.as_bytes())
}

/// The session as the application gets it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Handed {
    /// `None` for a guest.
    pub id: Option<SessionId>,
    /// 0 for a guest.
    pub version: u64,
    /// The data, compact JSON text of an object.
    pub data: String,
}

impl Handed {
    /// A visitor without a session.
    pub fn guest() -> Handed {
        Handed {
            id: None,
            version: 0,
            data: "{}".to_owned(),
        }
    }
}

/// The request headers that carry `session` to the application:
/// `(name, value)` pairs. `data_url` makes the URL of the session for one
/// too large for the header budget.
pub fn request_headers(
    session: &Handed,
    entry_node: &str,
    data_url: impl FnOnce(&SessionId) -> String,
) -> Vec<(&'static str, String)> {
    let mut headers = vec![(ENTRY_NODE, entry_node.to_owned())];
    let encoded = URL_SAFE.encode(session.data.as_bytes());
    match session.id {
        None => headers.push((SESSION_DATA, encoded)),
        Some(id) => {
            headers.push((SESSION_ID, id.to_string()));
            headers.push((SESSION_VERSION, session.version.to_string()));
            if encoded.len() <= HEADER_BUDGET {
                headers.push((SESSION_DATA, encoded));
            } else {
                headers.push((SESSION_DATA_URL, data_url(&id)));
            }
        }
    }
    headers
}

/// What the application's answer asks of the session's data.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum DataChange {
    /// Nothing.
    #[default]
    Keep,
    /// Replace it with this object.
    Replace(Map<String, Value>),
    /// Merge this patch into it (RFC 7386).
    Patch(Map<String, Value>),
}

/// A session change asked by the application's response headers.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Change {
    /// The data.
    pub data: DataChange,
    /// Delete the session (logout).
    pub delete: bool,
    /// A new id, same data (after the data change).
    pub renew: bool,
}

impl Change {
    /// Whether it asks for anything.
    pub fn is_empty(&self) -> bool {
        self.data == DataChange::Keep && !self.delete && !self.renew
    }
}

/// Why the application's change headers were refused (an application bug:
/// answered as a 502 `bad_session_header`, nothing changed).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ContractError {
    /// The header is not base64url of a UTF-8 JSON object.
    #[error("{header} is not base64url of a JSON object: {problem}")]
    BadValue {
        /// The header.
        header: &'static str,
        /// What is wrong.
        problem: String,
    },
    /// The header came more than once.
    #[error("{0} appears more than once")]
    Repeated(&'static str),
    /// Two headers that cannot go together.
    #[error("{0} and {1} cannot be combined")]
    Combined(&'static str, &'static str),
}

fn decode_object(header: &'static str, value: &[u8]) -> Result<Map<String, Value>, ContractError> {
    let bad = |problem: String| ContractError::BadValue { header, problem };
    let trimmed = value.trim_ascii();
    let unpadded = trimmed
        .strip_suffix(b"==")
        .or_else(|| trimmed.strip_suffix(b"="));
    let bytes = URL_SAFE_NO_PAD
        .decode(unpadded.unwrap_or(trimmed))
        .map_err(|e| bad(format!("base64url: {e}")))?;
    match serde_json::from_slice::<Value>(&bytes) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(bad("the JSON is not an object".to_owned())),
        Err(e) => Err(bad(format!("JSON: {e}"))),
    }
}

/// Reads the change asked by the application's response headers
/// (`(lower-case name, value)` pairs; other headers are ignored).
pub fn parse_change<'a>(
    headers: impl IntoIterator<Item = (&'a str, &'a [u8])>,
) -> Result<Change, ContractError> {
    let mut change = Change::default();
    let (mut replace, mut patch, mut delete, mut renew) = (0, 0, 0, 0);
    for (name, value) in headers {
        match name {
            REPLACE => {
                replace += 1;
                change.data = DataChange::Replace(decode_object(REPLACE, value)?);
            }
            PATCH => {
                patch += 1;
                change.data = DataChange::Patch(decode_object(PATCH, value)?);
            }
            DELETE => {
                delete += 1;
                change.delete = true;
            }
            RENEW => {
                renew += 1;
                change.renew = true;
            }
            _ => {}
        }
    }
    for (count, header) in [
        (replace, REPLACE),
        (patch, PATCH),
        (delete, DELETE),
        (renew, RENEW),
    ] {
        if count > 1 {
            return Err(ContractError::Repeated(header));
        }
    }
    if replace > 0 && patch > 0 {
        return Err(ContractError::Combined(REPLACE, PATCH));
    }
    if change.delete {
        if replace > 0 {
            return Err(ContractError::Combined(DELETE, REPLACE));
        }
        if patch > 0 {
            return Err(ContractError::Combined(DELETE, PATCH));
        }
        if change.renew {
            return Err(ContractError::Combined(DELETE, RENEW));
        }
    }
    Ok(change)
}

/// What to do to the session store for one answer.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Nothing (no change asked, or one for a guest that stores nothing).
    Nothing,
    /// The answer is a server error: its change is not applied.
    Ignore,
    /// Start a session holding this data, and set its cookie.
    Create(Map<String, Value>),
    /// Replace the data if the session is still at `version`.
    Replace {
        /// The session.
        id: SessionId,
        /// The version the application saw.
        version: u64,
        /// The new data.
        data: Map<String, Value>,
        /// Then move it to a new id.
        renew: bool,
    },
    /// Write the patched top-level fields if the fields the patch touches
    /// still hold what the application saw (an optimistic transaction: patches
    /// of different fields by concurrent requests both apply).
    Commit {
        /// The session.
        id: SessionId,
        /// The version the application saw.
        base: u64,
        /// The fields the patch touches, with the values the application saw.
        reads: Vec<(String, Option<Value>)>,
        /// Their new values (`None`: removed).
        writes: Vec<(String, Option<Value>)>,
        /// Then move it to a new id.
        renew: bool,
    },
    /// Move the session to a new id, same data.
    Renew(SessionId),
    /// Delete the session (if any) and expire the cookie.
    Delete(Option<SessionId>),
}

/// Decides what the application's `change` does to the session it was
/// handed (`seen`: its data as handed), given the answer's `status`.
///
/// A server error (5xx) changes nothing: the application failed, and what it
/// meant to store is not trusted (see `docs/gateway.md`).
pub fn decide(
    change: &Change,
    id: Option<SessionId>,
    version: u64,
    seen: &Map<String, Value>,
    status: u16,
) -> Action {
    if change.is_empty() {
        return Action::Nothing;
    }
    if status >= 500 {
        return Action::Ignore;
    }
    if change.delete {
        return Action::Delete(id);
    }
    let Some(id) = id else {
        // A guest: setting data starts a session (already under a fresh id:
        // renewing it is moot).
        let data = match &change.data {
            DataChange::Keep => return Action::Nothing,
            DataChange::Replace(data) => data.clone(),
            DataChange::Patch(patch) => {
                let mut data = Value::Object(Map::new());
                json_patch::merge(&mut data, &Value::Object(patch.clone()));
                match data {
                    Value::Object(map) => map,
                    _ => Map::new(),
                }
            }
        };
        return match data.is_empty() {
            true => Action::Nothing,
            false => Action::Create(data),
        };
    };
    match &change.data {
        DataChange::Keep => Action::Renew(id),
        DataChange::Replace(data) => Action::Replace {
            id,
            version,
            data: data.clone(),
            renew: change.renew,
        },
        DataChange::Patch(patch) => {
            let mut reads = Vec::with_capacity(patch.len());
            let mut writes = Vec::with_capacity(patch.len());
            for (key, value) in patch {
                let old = seen.get(key).cloned();
                let new = match value {
                    Value::Null => None,
                    value => {
                        let mut merged = old.clone().unwrap_or(Value::Null);
                        json_patch::merge(&mut merged, value);
                        Some(merged)
                    }
                };
                reads.push((key.clone(), old));
                writes.push((key.clone(), new));
            }
            Action::Commit {
                id,
                base: version,
                reads,
                writes,
                renew: change.renew,
            }
        }
    }
}

/// Fields as the store's optimistic transaction takes them.
pub(crate) fn fields(values: &[(String, Option<Value>)]) -> Vec<Field> {
    values
        .iter()
        .map(|(key, value)| {
            let raw: Option<Box<RawValue>> = value
                .as_ref()
                .and_then(|v| serde_json::value::to_raw_value(v).ok());
            (key.clone(), raw)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn b64(value: &Value) -> String {
        URL_SAFE.encode(value.to_string())
    }

    fn map(value: Value) -> Map<String, Value> {
        match value {
            Value::Object(map) => map,
            _ => panic!("not an object"),
        }
    }

    fn parse(headers: &[(&str, &str)]) -> Result<Change, ContractError> {
        parse_change(headers.iter().map(|(n, v)| (*n, v.as_bytes())))
    }

    #[test]
    fn reserved_names_are_matched_whatever_their_case() {
        assert!(is_reserved("x-sessionmesh-id"));
        assert!(is_reserved("X-SessionMesh-Data"));
        assert!(is_reserved("x-sessionmesh-anything-new"));
        assert!(!is_reserved("x-session-token"));
        assert!(!is_reserved("x-sessionmes"));
        assert!(!is_reserved("cookie"));
    }

    #[test]
    fn a_guest_gets_empty_data_and_no_id() {
        let headers = request_headers(&Handed::guest(), "node1", |_| unreachable!());
        assert_eq!(
            headers,
            vec![
                (ENTRY_NODE, "node1".to_owned()),
                (SESSION_DATA, "e30=".to_owned())
            ]
        );
    }

    #[test]
    fn any_utf8_json_survives_the_header_encoding() {
        let data = json!({"name": "Zoë \"x\"\n\r\u{0}ü 名前 🎉", "n": [1, 2.5, null]});
        let id = SessionId::random();
        let handed = Handed {
            id: Some(id),
            version: 7,
            data: data.to_string(),
        };
        let headers = request_headers(&handed, "node2", |_| unreachable!());
        let value = &headers.iter().find(|(n, _)| *n == SESSION_DATA).unwrap().1;
        assert!(value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_=".contains(&b)));
        let decoded: Value = serde_json::from_slice(&URL_SAFE.decode(value).unwrap()).unwrap();
        assert_eq!(decoded, data);
        assert!(headers.contains(&(SESSION_ID, id.to_string())));
        assert!(headers.contains(&(SESSION_VERSION, "7".to_owned())));
    }

    #[test]
    fn a_session_over_the_budget_is_pointed_to_never_truncated() {
        let id = SessionId::random();
        let fits = "x".repeat(HEADER_BUDGET / 4 * 3 - 20);
        let handed = |text: &str| Handed {
            id: Some(id),
            version: 1,
            data: json!({ "t": text }).to_string(),
        };
        let headers = request_headers(&handed(&fits), "n", |_| unreachable!());
        let data = &headers.iter().find(|(n, _)| *n == SESSION_DATA).unwrap().1;
        assert!(data.len() <= HEADER_BUDGET);
        let over = "x".repeat(HEADER_BUDGET);
        let headers = request_headers(&handed(&over), "n", |id| format!("http://n/{id}"));
        assert!(!headers.iter().any(|(n, _)| *n == SESSION_DATA));
        assert!(headers.contains(&(SESSION_DATA_URL, format!("http://n/{id}"))));
    }

    #[test]
    fn change_headers_parse_padded_or_not() {
        let data = json!({"user": "ada"});
        let padded = b64(&data);
        let unpadded = padded.trim_end_matches('=').to_owned();
        for value in [padded, unpadded] {
            assert_eq!(
                parse(&[(REPLACE, &value)]).unwrap().data,
                DataChange::Replace(map(data.clone()))
            );
            assert_eq!(
                parse(&[(PATCH, &value), (RENEW, "1")]).unwrap(),
                Change {
                    data: DataChange::Patch(map(data.clone())),
                    delete: false,
                    renew: true
                }
            );
        }
        assert!(parse(&[("content-type", "text/html")]).unwrap().is_empty());
        assert!(parse(&[(DELETE, "1")]).unwrap().delete);
    }

    #[test]
    fn bad_change_headers_are_refused() {
        let object = b64(&json!({}));
        let cases: Vec<Vec<(&str, String)>> = vec![
            vec![(REPLACE, "not base64!".into())],
            vec![(REPLACE, URL_SAFE.encode("[1, 2]"))],
            vec![(PATCH, URL_SAFE.encode("{not json"))],
            vec![(PATCH, URL_SAFE.encode([0xff, 0xfe]))],
            vec![(REPLACE, object.clone()), (PATCH, object.clone())],
            vec![(REPLACE, object.clone()), (REPLACE, object.clone())],
            vec![(DELETE, "1".into()), (PATCH, object.clone())],
            vec![(DELETE, "1".into()), (RENEW, "1".into())],
        ];
        for case in cases {
            let pairs: Vec<(&str, &str)> = case.iter().map(|(n, v)| (*n, v.as_str())).collect();
            assert!(parse(&pairs).is_err(), "{pairs:?}");
        }
    }

    #[test]
    fn a_server_error_applies_nothing() {
        let change = parse(&[(DELETE, "1")]).unwrap();
        let id = Some(SessionId::random());
        assert_eq!(decide(&change, id, 1, &Map::new(), 500), Action::Ignore);
        assert_eq!(decide(&change, id, 1, &Map::new(), 503), Action::Ignore);
        assert_eq!(decide(&change, id, 1, &Map::new(), 404), Action::Delete(id));
        assert_eq!(
            decide(&Change::default(), id, 1, &Map::new(), 200),
            Action::Nothing
        );
    }

    #[test]
    fn setting_data_for_a_guest_creates_a_session() {
        let replace = parse(&[(REPLACE, &b64(&json!({"user": "ada"})))]).unwrap();
        assert_eq!(
            decide(&replace, None, 0, &Map::new(), 200),
            Action::Create(map(json!({"user": "ada"})))
        );
        let patch = parse(&[(PATCH, &b64(&json!({"a": {"b": 1, "c": null}, "d": null})))]).unwrap();
        assert_eq!(
            decide(&patch, None, 0, &Map::new(), 302),
            Action::Create(map(json!({"a": {"b": 1}})))
        );
        let empty = parse(&[(PATCH, &b64(&json!({"d": null})))]).unwrap();
        assert_eq!(decide(&empty, None, 0, &Map::new(), 200), Action::Nothing);
        let renew = parse(&[(RENEW, "1")]).unwrap();
        assert_eq!(decide(&renew, None, 0, &Map::new(), 200), Action::Nothing);
        let logout = parse(&[(DELETE, "1")]).unwrap();
        assert_eq!(
            decide(&logout, None, 0, &Map::new(), 200),
            Action::Delete(None)
        );
    }

    #[test]
    fn a_patch_writes_merged_fields_and_checks_what_it_touches() {
        let id = SessionId::random();
        let seen = map(json!({"cart": {"a": 1, "b": 2}, "user": "ada", "x": 1}));
        let patch = parse(&[(
            PATCH,
            &b64(&json!({"cart": {"b": null, "c": 3}, "x": null, "new": true})),
        )])
        .unwrap();
        let Action::Commit {
            id: got,
            base,
            reads,
            writes,
            renew,
        } = decide(&patch, Some(id), 4, &seen, 200)
        else {
            panic!("a commit");
        };
        assert_eq!((got, base, renew), (id, 4, false));
        let sorted = |mut v: Vec<(String, Option<Value>)>| {
            v.sort_by(|a, b| a.0.cmp(&b.0));
            v
        };
        assert_eq!(
            sorted(reads),
            vec![
                ("cart".into(), Some(json!({"a": 1, "b": 2}))),
                ("new".into(), None),
                ("x".into(), Some(json!(1))),
            ]
        );
        assert_eq!(
            sorted(writes),
            vec![
                ("cart".into(), Some(json!({"a": 1, "c": 3}))),
                ("new".into(), Some(json!(true))),
                ("x".into(), None),
            ]
        );
    }

    #[test]
    fn replace_and_renew_of_a_session() {
        let id = SessionId::random();
        let change = parse(&[(REPLACE, &b64(&json!({"user": "bob"}))), (RENEW, "yes")]).unwrap();
        assert_eq!(
            decide(&change, Some(id), 2, &Map::new(), 200),
            Action::Replace {
                id,
                version: 2,
                data: map(json!({"user": "bob"})),
                renew: true
            }
        );
        let renew = parse(&[(RENEW, "1")]).unwrap();
        assert_eq!(
            decide(&renew, Some(id), 2, &Map::new(), 200),
            Action::Renew(id)
        );
    }
}
