//! The demo application: the login flow of the Ktor example this project grew
//! from, built only on sessionmesh's public API (the [`Session`] extractor and
//! its middleware), as any application on the cluster would be.

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use sessionmesh::actix::{Session, SessionMiddleware};
use sessionmesh::web::{ENTRY_NODE, SERVED_BY};
use sessionmesh::Mesh;

/// Longest accepted login name, in characters.
const MAX_NAME_CHARS: usize = 256;

/// The demo's routes: `/`, `/login`, `/logout`, each with the session
/// middleware (the [`Mesh`] comes from the app data).
pub fn routes(cfg: &mut web::ServiceConfig) {
    use sessionmesh::web::{get_or_head, resource};
    cfg.service(
        resource("/", "GET, HEAD")
            .wrap(SessionMiddleware::default())
            .route(get_or_head().to(home)),
    )
    .service(
        resource("/login", "GET, POST")
            .wrap(SessionMiddleware::default())
            .route(web::get().to(login))
            .route(web::post().to(login)),
    )
    .service(
        resource("/logout", "GET, POST")
            .wrap(SessionMiddleware::default())
            .route(web::get().to(logout))
            .route(web::post().to(logout)),
    );
}

/// Appends `text` to `out`, escaped for HTML element content and attribute values.
pub(crate) fn escape_into(out: &mut String, text: &str) {
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
pub(crate) const STYLE: &str =
    "<style>:root{color-scheme:light dark;font-family:system-ui,sans-serif}\
body{max-width:34rem;margin:3rem auto;padding:0 1rem;line-height:1.5}\
input,button{font:inherit;padding:.35rem .6rem}\
.error{color:#c62828}footer{opacity:.7;font-size:.9em}</style>";

/// The page: a greeting, the form that fits (log in or log out), an optional
/// message about the last form, and the node that served it. Built in one
/// allocation.
pub(crate) fn page(node_id: &str, name: Option<&str>, message: Option<&str>) -> String {
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

/// Names the node that served the session, and this one when it is another.
fn mark_served(response: &mut HttpResponse, mesh: &Mesh, served_by: &str) {
    let headers = response.headers_mut();
    let entry = mesh.node_id();
    let marks = [(SERVED_BY, served_by), (ENTRY_NODE, entry)];
    for (name, value) in marks
        .into_iter()
        .take(if served_by == entry { 1 } else { 2 })
    {
        if let Ok(value) = header::HeaderValue::from_str(value) {
            headers.insert(header::HeaderName::from_static(name), value);
        }
    }
}

/// `GET /`: greets the session's name, or the Guest; names the node that
/// served the session.
async fn home(session: Session, mesh: Mesh) -> HttpResponse {
    let name: Option<String> = session.get("name").ok().flatten();
    let served_by = session.served_by();
    let mut response = html(page(&served_by, name.as_deref(), None));
    mark_served(&mut response, &mesh, &served_by);
    response
}

#[derive(Deserialize)]
struct LoginForm {
    name: Option<String>,
}

/// A JSON error, as the rest of the API answers them.
fn bad_request(code: &str, message: String) -> HttpResponse {
    HttpResponse::BadRequest().json(serde_json::json!({"error": code, "message": message}))
}

/// `GET /login?name=` and `POST /login` (form field `name`): the session holds
/// the name, under a new id (against session fixation). `/login` with no name
/// shows the form; an empty or too long name shows it again with a message
/// (400, nothing stored).
async fn login(req: HttpRequest, body: web::Bytes, session: Session, mesh: Mesh) -> HttpResponse {
    let is_post = req.method() == actix_web::http::Method::POST;
    let form: Result<LoginForm, _> = if is_post {
        serde_urlencoded::from_bytes(&body)
    } else {
        serde_urlencoded::from_str(req.query_string())
    };
    let form = match form {
        Ok(form) => form,
        Err(e) => return bad_request("bad_form", format!("could not parse the login form: {e}")),
    };
    let name = match form.name {
        Some(name) => name.trim().to_owned(),
        None if is_post => String::new(),
        None => return html(page(mesh.node_id(), None, None)),
    };
    let refuse = |message: &str| {
        let mut response = html(page(mesh.node_id(), None, Some(message)));
        *response.status_mut() = actix_web::http::StatusCode::BAD_REQUEST;
        response
    };
    if name.is_empty() {
        return refuse("Please enter a name to log in.");
    }
    if name.chars().count() > MAX_NAME_CHARS {
        return refuse(&format!("A name has at most {MAX_NAME_CHARS} characters."));
    }
    session.clear();
    if let Err(error) = session.insert("name", &name) {
        return bad_request("bad_name", error.to_string());
    }
    session.renew();
    let mut response = if is_post {
        let mut r = HttpResponse::SeeOther();
        r.insert_header((header::LOCATION, "/"));
        r
    } else {
        HttpResponse::Ok()
    };
    response
        .content_type("text/plain; charset=utf-8")
        .body("Login successful.")
}

/// `GET|POST /logout`: deletes the session and expires the cookie. A POST (the
/// page's button) leads back to `/` (303), as a POST login does.
async fn logout(req: HttpRequest, session: Session) -> HttpResponse {
    session.purge();
    let mut response = if req.method() == actix_web::http::Method::POST {
        let mut r = HttpResponse::SeeOther();
        r.insert_header((header::LOCATION, "/"));
        r
    } else {
        HttpResponse::Ok()
    };
    response
        .content_type("text/plain; charset=utf-8")
        .body("Logged out.")
}
