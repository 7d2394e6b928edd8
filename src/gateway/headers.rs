//! What a proxy does to headers, as pure functions: hop-by-hop headers removed, the contract's reserved headers removed, `Forwarded` and `X-Forwarded-*` added.

use std::net::IpAddr;

use super::contract::is_reserved;

/// Headers that describe one connection, never passed on (RFC 9110 7.6.1),
/// plus the non-standard ones proxies also drop.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// Who sent a request to the entry node, as the entry node saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Client {
    /// The address of the TCP peer (a browser, or the load balancer).
    pub ip: IpAddr,
    /// `http` or `https`, as the public listener serves.
    pub proto: &'static str,
    /// The `Host` the request named, if any.
    pub host: Option<String>,
}

/// Whether a header is dropped between hops: hop-by-hop ones, and those the
/// `Connection` header names.
fn is_hop_by_hop(name: &str, connection: &[String]) -> bool {
    HOP_BY_HOP.contains(&name) || connection.iter().any(|c| c == name)
}

/// The header names a `Connection` header lists, lower case.
fn connection_tokens<'a>(headers: impl IntoIterator<Item = (&'a str, &'a [u8])>) -> Vec<String> {
    headers
        .into_iter()
        .filter(|(name, _)| *name == "connection")
        .filter_map(|(_, value)| std::str::from_utf8(value).ok())
        .flat_map(|value| value.split(','))
        .map(|token| token.trim().to_ascii_lowercase())
        .filter(|token| !token.is_empty())
        .collect()
}

/// The headers of a request or answer as they go on to the next hop:
/// without hop-by-hop headers and without any `X-Sessionmesh-*` header.
/// Names are lower case (as HTTP libraries give them).
pub fn pass_on<'a>(headers: &[(&'a str, &'a [u8])]) -> Vec<(&'a str, &'a [u8])> {
    let connection = connection_tokens(headers.iter().copied());
    headers
        .iter()
        .copied()
        .filter(|(name, _)| !is_hop_by_hop(name, &connection) && !is_reserved(name))
        .collect()
}

/// A `Forwarded` node or host value: a token as is, anything else quoted.
fn forwarded_value(text: &str) -> String {
    let token = !text.is_empty()
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
    match token {
        true => text.to_owned(),
        false => format!("\"{}\"", text.replace('\\', "\\\\").replace('"', "\\\"")),
    }
}

/// The forwarding headers the entry node adds to a request from `client`
/// carrying `headers` (after [`pass_on`]): a `Forwarded` element appended
/// (RFC 7239), the client's address appended to `X-Forwarded-For`, and
/// `X-Forwarded-Proto` / `X-Forwarded-Host` set unless a proxy in front (a
/// load balancer) already set them. Returns the headers to set, each
/// replacing any header of that name.
pub fn forwarding(headers: &[(&str, &[u8])], client: &Client) -> Vec<(&'static str, String)> {
    let joined = |name: &str| -> Option<String> {
        let values: Vec<&str> = headers
            .iter()
            .filter(|(n, _)| *n == name)
            .filter_map(|(_, v)| std::str::from_utf8(v).ok())
            .collect();
        (!values.is_empty()).then(|| values.join(", "))
    };
    let ip = client.ip.to_canonical();
    let node = match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => format!("\"[{v6}]\""),
    };
    let mut element = format!("for={node};proto={}", client.proto);
    if let Some(host) = &client.host {
        element.push_str(&format!(";host={}", forwarded_value(host)));
    }
    let append = |existing: Option<String>, new: String| match existing {
        Some(existing) => format!("{existing}, {new}"),
        None => new,
    };
    let mut set = vec![
        ("forwarded", append(joined("forwarded"), element)),
        (
            "x-forwarded-for",
            append(joined("x-forwarded-for"), ip.to_string()),
        ),
    ];
    if joined("x-forwarded-proto").is_none() {
        set.push(("x-forwarded-proto", client.proto.to_owned()));
    }
    if let (None, Some(host)) = (joined("x-forwarded-host"), &client.host) {
        set.push(("x-forwarded-host", host.clone()));
    }
    set
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs<'a>(list: &'a [(&'a str, &'a str)]) -> Vec<(&'a str, &'a [u8])> {
        list.iter().map(|(n, v)| (*n, v.as_bytes())).collect()
    }

    #[test]
    fn hop_by_hop_and_reserved_headers_are_dropped() {
        let headers = pairs(&[
            ("connection", "keep-alive, x-private"),
            ("keep-alive", "timeout=5"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "websocket"),
            ("te", "trailers"),
            ("x-private", "dropped: named by Connection"),
            ("x-sessionmesh-id", "forged"),
            ("X-Sessionmesh-Data", "forged"),
            ("cookie", "SESSION=abc; app=1"),
            ("set-cookie", "a=1"),
            ("set-cookie", "b=2"),
            ("content-length", "3"),
            ("x-session-token", "the application's own"),
        ]);
        let kept: Vec<&str> = pass_on(&headers).iter().map(|(n, _)| *n).collect();
        assert_eq!(
            kept,
            [
                "cookie",
                "set-cookie",
                "set-cookie",
                "content-length",
                "x-session-token"
            ]
        );
    }

    #[test]
    fn the_entry_node_appends_itself_as_proxies_do() {
        let client = Client {
            ip: "192.0.2.7".parse().unwrap(),
            proto: "http",
            host: Some("shop.example:8080".into()),
        };
        let set = forwarding(&[], &client);
        assert_eq!(
            set,
            vec![
                (
                    "forwarded",
                    "for=192.0.2.7;proto=http;host=\"shop.example:8080\"".to_owned()
                ),
                ("x-forwarded-for", "192.0.2.7".to_owned()),
                ("x-forwarded-proto", "http".to_owned()),
                ("x-forwarded-host", "shop.example:8080".to_owned()),
            ]
        );
        // Behind a load balancer: its values are kept, ours appended.
        let headers = pairs(&[
            ("forwarded", "for=198.51.100.1;proto=https"),
            ("x-forwarded-for", "198.51.100.1"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "shop.example"),
        ]);
        let client = Client {
            ip: "::ffff:10.0.0.2".parse().unwrap(),
            proto: "http",
            host: None,
        };
        let set = forwarding(&headers, &client);
        assert_eq!(
            set,
            vec![
                (
                    "forwarded",
                    "for=198.51.100.1;proto=https, for=10.0.0.2;proto=http".to_owned()
                ),
                ("x-forwarded-for", "198.51.100.1, 10.0.0.2".to_owned()),
            ]
        );
        let v6 = Client {
            ip: "2001:db8::1".parse().unwrap(),
            proto: "https",
            host: Some("a.example".into()),
        };
        assert_eq!(
            forwarding(&[], &v6)[0].1,
            "for=\"[2001:db8::1]\";proto=https;host=a.example"
        );
    }
}
