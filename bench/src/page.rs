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

/// The pages' inline stylesheet, as sessionmesh's.
const STYLE: &str = "<style>:root{color-scheme:light dark;font-family:system-ui,sans-serif}\
body{max-width:34rem;margin:3rem auto;padding:0 1rem;line-height:1.5}\
input,button{font:inherit;padding:.35rem .6rem}\
.error{color:#c62828}footer{opacity:.7;font-size:.9em}</style>";

/// `Hello, <name>` with a logout form, or `Hello, Guest` with a login form.
pub fn page(node_id: &str, name: Option<&str>) -> String {
    let (greeting, form) = match name {
        Some(name) => (
            format!("Hello, {}", escape(name)),
            r#"<form method="post" action="/logout"><button type="submit">Log out</button></form>"#,
        ),
        None => (
            "Hello, Guest".to_owned(),
            r#"<form method="post" action="/login"><label>Name <input name="name" autofocus required></label> <button type="submit">Log in</button></form>"#,
        ),
    };
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>sessionmesh</title>{STYLE}</head>\
<body><main><h1 id=\"greeting\">{greeting}</h1>{form}</main><footer>Served by <code id=\"served-by\">{node}</code>.</footer></body></html>\n",
        node = escape(node_id)
    )
}

/// The body of a successful login, as sessionmesh answers it.
pub const LOGIN_OK: &str = "Login successful.";
