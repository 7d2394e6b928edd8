//! The demo application's pages: the Ktor example's login flow, served by the
//! session's owner.

use actix_web::http::header;
use actix_web::{web, HttpResponse};
use serde::Deserialize;
use serde_json::json;

use bytes::Bytes;

use super::{read_body, ApiError, Ctx, SERVED_BY};
use crate::peer_client::{HolderRead, ENTRY_NODE};
use crate::session::{json_str_field, now_millis, to_raw, Session};

/// Longest accepted login name, in characters.
const MAX_NAME_CHARS: usize = 256;

pub(super) fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(super::resource("/", "GET, HEAD").route(super::get_or_head().to(home)))
        .service(
            super::resource("/login", "GET, POST")
                .get(login)
                .post(login),
        )
        .service(
            super::resource("/logout", "GET, POST")
                .get(logout)
                .post(logout),
        );
}

/// Appends `text` to `out`, escaped for HTML element content and attribute values.
fn escape_into(out: &mut String, text: &str) {
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
}

/// The pages' stylesheet: inline, no external assets; follows the visitor's
/// light or dark preference.
const STYLE: &str = "<style>:root{color-scheme:light dark;font-family:system-ui,sans-serif}\
body{max-width:34rem;margin:3rem auto;padding:0 1rem;line-height:1.5}\
input,button{font:inherit;padding:.35rem .6rem}\
.error{color:#c62828}footer{opacity:.7;font-size:.9em}</style>";

/// The page: a greeting, the form that fits (log in or log out), an optional
/// message about the last form, and the node that served it. Built in one
/// allocation.
fn page(node_id: &str, name: Option<&str>, message: Option<&str>) -> String {
    const HEAD: &str = "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>sessionmesh</title>";
    const BODY: &str = "</head><body><main><h1 id=\"greeting\">Hello, ";
    const LOGOUT: &str =
        r#"<form method="post" action="/logout"><button type="submit">Log out</button></form>"#;
    const LOGIN: &str = r#"<form method="post" action="/login"><label>Name <input name="name" autofocus required></label> <button type="submit">Log in</button></form>"#;
    const MESSAGE: &str = "<p class=\"error\" id=\"message\" role=\"alert\">";
    const SERVED: &str = "</main><footer>Served by <code id=\"served-by\">";
    const TAIL: &str = "</code>.</footer></body></html>\n";
    let mut out = String::with_capacity(
        HEAD.len()
            + STYLE.len()
            + BODY.len()
            + LOGIN.len()
            + SERVED.len()
            + TAIL.len()
            + 16
            + 6 * (node_id.len() + name.map_or(5, str::len))
            + message.map_or(0, |m| MESSAGE.len() + 6 * m.len() + 4),
    );
    out.push_str(HEAD);
    out.push_str(STYLE);
    out.push_str(BODY);
    match name {
        Some(name) => escape_into(&mut out, name),
        None => out.push_str("Guest"),
    }
    out.push_str("</h1>");
    if let Some(message) = message {
        out.push_str(MESSAGE);
        escape_into(&mut out, message);
        out.push_str("</p>");
    }
    out.push_str(if name.is_some() { LOGOUT } else { LOGIN });
    out.push_str(SERVED);
    escape_into(&mut out, node_id);
    out.push_str(TAIL);
    out
}

fn html(body: String) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .body(body)
}

/// `GET /`: greets the session's name, or the Guest.
async fn home(ctx: Ctx) -> Result<HttpResponse, ApiError> {
    let node = ctx.node.clone();
    let Some(id) = ctx.cookie_session() else {
        return Ok(html(page(node.id(), None, None)));
    };
    let local = async {
        let name = node
            .replication()
            .read(&id, |s| s.data_str("name"))
            .await
            .flatten();
        Ok(html(page(node.id(), name.as_deref(), None)))
    };
    // Elsewhere, the holder is asked for the session over a link and the page
    // is made here, with the holder's id as the node that served it.
    let ctx = &ctx;
    let entry = ctx.node.id();
    ctx.on_holder(&id, local, |holder, addr| async move {
        let name = match ctx.peers.read_session(&holder, &addr, &id).await? {
            HolderRead::Data(data) => std::str::from_utf8(&data)
                .ok()
                .and_then(|json| json_str_field(json, "name")),
            HolderRead::NoSession => None,
            HolderRead::NoLink => {
                return ctx
                    .peers
                    .forward(&holder, &addr, &ctx.req, Bytes::new(), Some(&id))
                    .await
            }
        };
        let mut response = html(page(&holder, name.as_deref(), None));
        let headers = response.headers_mut();
        for (name, value) in [(SERVED_BY, &*holder), (ENTRY_NODE, entry)] {
            if let Ok(value) = header::HeaderValue::from_str(value) {
                headers.insert(header::HeaderName::from_static(name), value);
            }
        }
        Ok(response)
    })
    .await
}

#[derive(Deserialize)]
struct LoginForm {
    name: Option<String>,
}

/// `GET /login?name=` and `POST /login` (form field `name`): a new session
/// holding the name (a new id on every login, against session fixation).
async fn login(ctx: Ctx, payload: web::Payload) -> Result<HttpResponse, ApiError> {
    let node = ctx.node.clone();
    let body = read_body(&ctx.req, payload, node.config().max_session_bytes).await?;
    let is_post = ctx.req.method() == actix_web::http::Method::POST;
    let form: LoginForm = if is_post {
        serde_urlencoded::from_bytes(&body)
    } else {
        serde_urlencoded::from_str(ctx.req.query_string())
    }
    .map_err(|e| {
        ApiError::bad_request("bad_form", format!("could not parse the login form: {e}"))
    })?;
    // A visitor who opens `/login` gets the login form; a form sent without a
    // usable name gets it again, with a message (400: nothing was stored).
    let name = match form.name {
        Some(name) => name.trim().to_owned(),
        None if is_post => String::new(),
        None => return Ok(html(page(node.id(), None, None))),
    };
    let refuse = |message: &str| {
        let mut response = html(page(node.id(), None, Some(message)));
        *response.status_mut() = actix_web::http::StatusCode::BAD_REQUEST;
        Ok(response)
    };
    if name.is_empty() {
        return refuse("Please enter a name to log in.");
    }
    if name.chars().count() > MAX_NAME_CHARS {
        return refuse(&format!("A name has at most {MAX_NAME_CHARS} characters."));
    }
    let node = &node;
    let name = &name;
    ctx.create(body, |id| async move {
        let data = json!({ "name": name });
        let data = data
            .as_object()
            .map(to_raw)
            .unwrap_or_else(crate::session::empty_object);
        node.replication()
            .create(
                id,
                Session::new(data, node.config().session_ttl, now_millis()),
            )
            .await?;
        let cookie = node.cookies().cookie(&id);
        Ok(if is_post {
            HttpResponse::SeeOther()
                .cookie(cookie)
                .insert_header((header::LOCATION, "/"))
                .content_type("text/plain; charset=utf-8")
                .body("Login successful.")
        } else {
            HttpResponse::Ok()
                .cookie(cookie)
                .content_type("text/plain; charset=utf-8")
                .body("Login successful.")
        })
    })
    .await
}

/// `GET|POST /logout`: deletes the session and expires the cookie. A POST (the
/// page's button) leads back to `/` (303), as a POST login does.
async fn logout(ctx: Ctx) -> Result<HttpResponse, ApiError> {
    let node = ctx.node.clone();
    let is_post = ctx.req.method() == actix_web::http::Method::POST;
    let done = |node: &crate::node::Node| {
        let mut response = if is_post {
            let mut r = HttpResponse::SeeOther();
            r.insert_header((header::LOCATION, "/"));
            r
        } else {
            HttpResponse::Ok()
        };
        response
            .cookie(node.cookies().removal())
            .content_type("text/plain; charset=utf-8")
            .body("Logged out.")
    };
    let Some(id) = ctx.cookie_session() else {
        return Ok(done(&node));
    };
    let local = async {
        match node.replication().delete(&id, None).await {
            Ok(())
            | Err(crate::replication::OwnerError::Write(crate::session::WriteError::NotFound)) => {
                Ok(done(&node))
            }
            Err(e) => Err(e.into()),
        }
    };
    ctx.on_owner(&id, Default::default(), local).await
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
