//! Unit tests of the demo's page template (kept apart from `demo.rs`, which
//! the integration tests include as it is).

use crate::demo::{page, STYLE};

#[test]
fn names_are_escaped() {
    let html = page("n1", Some("<script>alert('x')</script>"), Some("<b>"));
    assert!(html.contains("Hello, &lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;"));
    assert!(!html.contains("<script>"));
    assert!(html.contains(">&lt;b&gt;</p>"));
}

#[test]
fn the_page_is_the_documented_bytes() {
    assert_eq!(
        page("n1", Some("Ada"), None),
        format!("<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>sessionmesh</title>{STYLE}</head>\
<body><main><h1 id=\"greeting\">Hello, Ada</h1><form method=\"post\" action=\"/logout\"><button type=\"submit\">Log out</button></form>\
</main><footer>Served by <code id=\"served-by\">n1</code>.</footer></body></html>\n")
    );
}

#[test]
fn guests_get_the_login_form() {
    let html = page("n1", None, None);
    assert!(html.contains("Hello, Guest"));
    assert!(!html.contains("id=\"message\""));
    assert!(html.contains(r#"action="/login""#));
}
