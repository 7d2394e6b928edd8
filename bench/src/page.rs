//! The demo page, byte for byte the template of sessionmesh's `src/http/pages.rs`,
//! so that the peer and the plain server answer the same bytes as sessionmesh
//! (the harness checks the response sizes: see `throughput::check_same_payloads`).

/// Escapes text for HTML element content and attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// `Hello, <name>` with a logout form, or `Hello, Guest` with a login form.
pub fn page(node_id: &str, name: Option<&str>) -> String {
    let (greeting, form) = match name {
        Some(name) => (
            format!("Hello, {}", escape(name)),
            r#"<form method="post" action="/logout"><button type="submit">Log out</button></form>"#.to_owned(),
        ),
        None => (
            "Hello, Guest".to_owned(),
            r#"<form method="post" action="/login"><label>Name <input name="name" autofocus></label> <button type="submit">Log in</button></form>"#.to_owned(),
        ),
    };
    format!(
        "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>sessionmesh</title></head>\
<body><h1 id=\"greeting\">{greeting}</h1>{form}<p>Served by <code id=\"served-by\">{node}</code>.</p></body></html>\n",
        node = escape(node_id)
    )
}

/// The body of a successful login, as sessionmesh answers it.
pub const LOGIN_OK: &str = "Login successful.";
