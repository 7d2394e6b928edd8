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

/// The page, built in one allocation.
fn page(node_id: &str, name: Option<&str>) -> String {
    const HEAD: &str = "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>sessionmesh</title></head><body><h1 id=\"greeting\">Hello, ";
    const LOGOUT: &str =
        r#"<form method="post" action="/logout"><button type="submit">Log out</button></form>"#;
    const LOGIN: &str = r#"<form method="post" action="/login"><label>Name <input name="name" autofocus></label> <button type="submit">Log in</button></form>"#;
    const SERVED: &str = "<p>Served by <code id=\"served-by\">";
    const TAIL: &str = "</code>.</p></body></html>\n";
    let mut out = String::with_capacity(
        HEAD.len()
            + LOGIN.len()
            + SERVED.len()
            + TAIL.len()
            + 16
            + 6 * (node_id.len() + name.map_or(5, str::len)),
    );
    out.push_str(HEAD);
    match name {
        Some(name) => escape_into(&mut out, name),
        None => out.push_str("Guest"),
    }
    out.push_str("</h1>");
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
        return Ok(html(page(node.id(), None)));
    };
    let local = async {
        let name = node
            .replication()
            .read(&id, |s| s.data_str("name"))
            .await
            .flatten();
        Ok(html(page(node.id(), name.as_deref())))
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
        let mut response = html(page(&holder, name.as_deref()));
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
    let name = form.name.map(|n| n.trim().to_owned()).unwrap_or_default();
    if name.is_empty() {
        return Err(ApiError::bad_request(
            "missing_name",
            "give a name: /login?name=<name>",
        ));
    }
    if name.chars().count() > MAX_NAME_CHARS {
        return Err(ApiError::bad_request(
            "name_too_long",
            format!("a name has at most {MAX_NAME_CHARS} characters"),
        ));
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

/// `GET|POST /logout`: deletes the session and expires the cookie.
async fn logout(ctx: Ctx) -> Result<HttpResponse, ApiError> {
    let node = ctx.node.clone();
    let done = |node: &crate::node::Node| {
        HttpResponse::Ok()
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
        let html = page("n1", Some("<script>alert('x')</script>"));
        assert!(html.contains("Hello, &lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;"));
        assert!(!html.contains("<script>"));
    }

    #[test]
    fn the_page_is_the_documented_bytes() {
        assert_eq!(
            page("n1", Some("Ada")),
            "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>sessionmesh</title></head>\
<body><h1 id=\"greeting\">Hello, Ada</h1><form method=\"post\" action=\"/logout\"><button type=\"submit\">Log out</button></form>\
<p>Served by <code id=\"served-by\">n1</code>.</p></body></html>\n"
        );
    }

    #[test]
    fn guests_get_the_login_form() {
        let html = page("n1", None);
        assert!(html.contains("Hello, Guest"));
        assert!(html.contains(r#"action="/login""#));
    }
}
