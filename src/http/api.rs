//! The JSON session API: by cookie (`/api/session`, for browser JavaScript) and by
//! id (`/api/sessions`, for back-end services in any language), over [`Mesh`]
//! operations.
//!
//! Preconditions follow RFC 9110 §13.1: `If-Match` takes `*` or a list of
//! entity tags, compared strongly (a weak tag `W/"3"` never matches); a write
//! whose session is at another version answers 412 and changes nothing.
//! `If-None-Match` on a read answers 304 when the session is at a version it
//! names (weak comparison).

use std::time::Duration;

use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use subtle::ConstantTimeEq;

use super::{read_body, ApiError, SERVED_BY};
use crate::mesh::{Document, Error, IfMatch, Mesh, ENTRY_NODE};
use crate::session::{self, parse_object, rfc3339, to_raw, SessionId};

/// Longest accepted `ttl_seconds`: 30 days.
const MAX_TTL_SECONDS: u64 = 30 * 24 * 3600;

pub(crate) fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(
        super::resource("/api/session", "GET, HEAD, PUT, PATCH, DELETE")
            .route(super::get_or_head().to(cookie_get))
            .put(cookie_put)
            .patch(cookie_patch)
            .delete(cookie_delete),
    )
    .service(super::resource("/api/sessions", "POST").post(create))
    .service(
        super::resource("/api/sessions/{id}", "GET, HEAD, PUT, PATCH, DELETE")
            .route(super::get_or_head().to(id_get))
            .put(id_put)
            .patch(id_patch)
            .delete(id_delete),
    );
}

/// A write to a session's data.
#[derive(Clone, Copy)]
enum Edit {
    /// Replace the data (PUT).
    Replace,
    /// RFC 7386 JSON merge patch (PATCH).
    Merge,
}

/// The session document of this API.
#[derive(Serialize)]
struct Body<'a> {
    id: &'a str,
    data: &'a RawValue,
    version: u64,
    created_at: String,
    expires_at: String,
    owner: &'a str,
    replicas: Vec<&'a str>,
}

impl<'a> Body<'a> {
    fn new(doc: &'a Document, replicas: Vec<&'a str>) -> Body<'a> {
        Body {
            id: doc.id.as_str(),
            data: doc.data(),
            version: doc.version,
            created_at: rfc3339(millis(doc.created_at)),
            expires_at: rfc3339(millis(doc.expires_at)),
            owner: doc.served_by(),
            replicas,
        }
    }
}

/// The JSON of the session document for `doc` (the fuzz targets check it
/// serialises whatever a peer's copy holds).
pub(crate) fn document_json(doc: &Document, replicas: Vec<&str>) -> serde_json::Result<String> {
    serde_json::to_string(&Body::new(doc, replicas))
}

fn millis(t: std::time::SystemTime) -> u64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The document's entity tag: its version, quoted.
fn etag(version: u64) -> String {
    format!("\"{version}\"")
}

/// The response carrying `doc`, marked with the node that served it.
fn document(mesh: &Mesh, doc: &Document, status: StatusCode) -> HttpResponse {
    let node = mesh.node();
    let view = node.view();
    let served_by = doc.served_by();
    let replicas: Vec<&str> = view
        .ring
        .preference_list(doc.id.as_bytes(), node.config().replication_factor.get())
        .map(|n| &**n)
        .filter(|n| *n != served_by)
        .collect();
    let body = Body::new(doc, replicas);
    let mut response = HttpResponse::build(status);
    response.insert_header((header::ETAG, etag(doc.version)));
    mark_served(&mut response, mesh, served_by);
    response.json(body)
}

/// `x-served-by` names the node that served the session; when it is another
/// node, `x-entry-node` names this one.
fn mark_served(response: &mut actix_web::HttpResponseBuilder, mesh: &Mesh, served_by: &str) {
    response.insert_header((SERVED_BY, served_by.to_owned()));
    if served_by != mesh.node_id() {
        response.insert_header((ENTRY_NODE, mesh.node_id().to_owned()));
    }
}

/// An entity tag of a precondition header.
enum Tag {
    /// `"<version>"`: one of ours.
    Version(u64),
    /// `W/"..."`, or a strong tag that is not a version: never matches strongly.
    Other { weak_version: Option<u64> },
}

/// Parses a precondition header: `None` for `*`, else its entity tags.
fn tags(value: &str) -> Result<Option<Vec<Tag>>, ()> {
    let value = value.trim();
    if value == "*" {
        return Ok(None);
    }
    let mut tags = Vec::new();
    for tag in value.split(',').map(str::trim).filter(|t| !t.is_empty()) {
        let (weak, quoted) = match tag.strip_prefix("W/") {
            Some(rest) => (true, rest),
            None => (false, tag),
        };
        let opaque = quoted
            .strip_prefix('"')
            .and_then(|t| t.strip_suffix('"'))
            .filter(|t| !t.contains('"'))
            .ok_or(())?;
        let version = opaque.parse::<u64>().ok();
        tags.push(match (weak, version) {
            (false, Some(v)) => Tag::Version(v),
            (true, v) => Tag::Other { weak_version: v },
            (false, None) => Tag::Other { weak_version: None },
        });
    }
    match tags.is_empty() {
        true => Err(()),
        false => Ok(Some(tags)),
    }
}

/// `If-Match`: `*`, or a list of strong entity tags (a weak one never matches).
fn if_match(req: &HttpRequest) -> Result<IfMatch, ApiError> {
    let Some(value) = req.headers().get(header::IF_MATCH) else {
        return Ok(IfMatch::any());
    };
    let bad = || {
        ApiError::bad_request(
            "bad_if_match",
            "If-Match must be * or a list of quoted versions, like \"3\" or \"1\", \"3\"",
        )
    };
    let text = value.to_str().map_err(|_| bad())?;
    match tags(text).map_err(|()| bad())? {
        // Every write needs the session to exist anyway.
        None => Ok(IfMatch::any()),
        Some(tags) => Ok(IfMatch::one_of(tags.into_iter().filter_map(|t| match t {
            Tag::Version(v) => Some(v),
            Tag::Other { .. } => None,
        }))),
    }
}

/// Whether `If-None-Match` names the session's version (weak comparison);
/// an unreadable header is ignored, as the RFC allows.
fn none_match(req: &HttpRequest, version: u64) -> bool {
    let Some(text) = req
        .headers()
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    match tags(text) {
        Ok(None) => true,
        Ok(Some(tags)) => tags.iter().any(|t| match t {
            Tag::Version(v) => *v == version,
            Tag::Other { weak_version } => *weak_version == Some(version),
        }),
        Err(()) => false,
    }
}

fn body_object(body: &[u8]) -> Result<serde_json::Map<String, serde_json::Value>, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::bad_request(
            "empty_body",
            "a JSON object is required",
        ));
    }
    parse_object(body).map_err(|e| match e {
        session::DataError::Malformed(_) => ApiError::bad_request("malformed_json", e.to_string()),
        session::DataError::NotAnObject(_) => ApiError::bad_request("not_an_object", e.to_string()),
    })
}

/// The session id in the path; a malformed one names no session.
fn path_id(req: &HttpRequest) -> Result<SessionId, ApiError> {
    req.match_info()
        .get("id")
        .and_then(SessionId::parse)
        .ok_or_else(|| Error::NotFound.into())
}

/// Checks `Authorization: Bearer <api_token>` when an api token is configured.
fn check_token(mesh: &Mesh, req: &HttpRequest) -> Result<(), ApiError> {
    let Some(token) = mesh.node().config().api_token.as_ref() else {
        return Ok(());
    };
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    if bool::from(given.as_bytes().ct_eq(token.expose())) {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "this API needs Authorization: Bearer <api_token>",
        ))
    }
}

/// 200 with the document, or 304 when `If-None-Match` names its version.
fn read_answer(mesh: &Mesh, req: &HttpRequest, doc: &Document) -> HttpResponse {
    if none_match(req, doc.version) {
        let mut response = HttpResponse::NotModified();
        response.insert_header((header::ETAG, etag(doc.version)));
        mark_served(&mut response, mesh, doc.served_by());
        return response.finish();
    }
    document(mesh, doc, StatusCode::OK)
}

/// Applies `edit` with `object` to session `id`.
async fn edit(
    mesh: &Mesh,
    id: &SessionId,
    edit: Edit,
    object: &serde_json::Map<String, serde_json::Value>,
    if_match: IfMatch,
) -> Result<Document, Error> {
    match edit {
        Edit::Replace => mesh.replace(id, object, if_match).await,
        Edit::Merge => mesh.merge_patch(id, object, if_match).await,
    }
}

// ---- by cookie ----

async fn cookie_get(mesh: Mesh, req: HttpRequest) -> Result<HttpResponse, ApiError> {
    let id = mesh
        .node()
        .cookies()
        .from_request(&req)
        .ok_or(Error::NotFound)?;
    let doc = mesh.get(&id).await?;
    Ok(read_answer(&mesh, &req, &doc))
}

async fn cookie_put(
    mesh: Mesh,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    cookie_write(mesh, req, payload, Edit::Replace).await
}

async fn cookie_patch(
    mesh: Mesh,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    cookie_write(mesh, req, payload, Edit::Merge).await
}

/// Starts a session for a visitor; 201 with the cookie.
async fn start_session(
    mesh: &Mesh,
    object: &serde_json::Map<String, serde_json::Value>,
) -> Result<HttpResponse, ApiError> {
    // A merge patch onto nothing: null fields are dropped, as RFC 7386 says.
    let data = crate::mesh::merge_patch(&session::empty_object(), object);
    let doc = mesh.create(&*data, None).await?;
    let mut response = document(mesh, &doc, StatusCode::CREATED);
    response
        .add_cookie(&mesh.node().cookies().cookie(&doc.id))
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "cookie", e.to_string()))?;
    Ok(response)
}

/// PUT/PATCH by cookie: edits the visitor's session, or starts one (201 and a
/// cookie) when there is none.
async fn cookie_write(
    mesh: Mesh,
    req: HttpRequest,
    payload: web::Payload,
    how: Edit,
) -> Result<HttpResponse, ApiError> {
    let body = read_body(&req, payload, mesh.node().config().max_session_bytes).await?;
    let conditional = req.headers().contains_key(header::IF_MATCH);
    let if_match = if_match(&req)?;
    let object = body_object(&body)?;
    match mesh.node().cookies().from_request(&req) {
        Some(id) => match edit(&mesh, &id, how, &object, if_match).await {
            Ok(doc) => Ok(document(&mesh, &doc, StatusCode::OK)),
            Err(Error::NotFound) if !conditional => start_session(&mesh, &object).await,
            Err(e) => Err(e.into()),
        },
        None if conditional => Err(Error::NotFound.into()),
        None => start_session(&mesh, &object).await,
    }
}

async fn cookie_delete(mesh: Mesh, req: HttpRequest) -> Result<HttpResponse, ApiError> {
    let id = mesh
        .node()
        .cookies()
        .from_request(&req)
        .ok_or(Error::NotFound)?;
    mesh.delete(&id, if_match(&req)?).await?;
    Ok(HttpResponse::NoContent()
        .cookie(mesh.node().cookies().removal())
        .finish())
}

// ---- by id ----

#[derive(Deserialize)]
struct CreateQuery {
    ttl_seconds: Option<u64>,
}

/// `POST /api/sessions[?ttl_seconds=N]` with the data object as body (empty = `{}`).
async fn create(
    mesh: Mesh,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    check_token(&mesh, &req)?;
    let body = read_body(&req, payload, mesh.node().config().max_session_bytes).await?;
    let query: CreateQuery = serde_urlencoded::from_str(req.query_string()).map_err(|e| {
        ApiError::bad_request(
            "bad_query",
            format!("ttl_seconds must be a whole number of seconds: {e}"),
        )
    })?;
    let ttl = match query.ttl_seconds {
        None => None,
        Some(s) if (1..=MAX_TTL_SECONDS).contains(&s) => Some(Duration::from_secs(s)),
        Some(_) => {
            return Err(ApiError::bad_request(
                "bad_ttl",
                format!("ttl_seconds must be between 1 and {MAX_TTL_SECONDS}"),
            ))
        }
    };
    let object = if body.iter().all(u8::is_ascii_whitespace) {
        Default::default()
    } else {
        body_object(&body)?
    };
    let doc = mesh.create(&*to_raw(&object), ttl).await?;
    let mut response = document(&mesh, &doc, StatusCode::CREATED);
    response.headers_mut().insert(
        header::LOCATION,
        header::HeaderValue::from_str(&format!("/api/sessions/{}", doc.id)).map_err(|e| {
            ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "location", e.to_string())
        })?,
    );
    Ok(response)
}

async fn id_get(mesh: Mesh, req: HttpRequest) -> Result<HttpResponse, ApiError> {
    check_token(&mesh, &req)?;
    let id = path_id(&req)?;
    let doc = mesh.get(&id).await?;
    Ok(read_answer(&mesh, &req, &doc))
}

async fn id_put(
    mesh: Mesh,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    id_write(mesh, req, payload, Edit::Replace).await
}

async fn id_patch(
    mesh: Mesh,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    id_write(mesh, req, payload, Edit::Merge).await
}

/// PUT/PATCH by id: edits an existing session (ids are minted by the cluster,
/// never chosen by clients, so a write never creates one).
async fn id_write(
    mesh: Mesh,
    req: HttpRequest,
    payload: web::Payload,
    how: Edit,
) -> Result<HttpResponse, ApiError> {
    check_token(&mesh, &req)?;
    let id = path_id(&req)?;
    let body = read_body(&req, payload, mesh.node().config().max_session_bytes).await?;
    let if_match = if_match(&req)?;
    let object = body_object(&body)?;
    let doc = edit(&mesh, &id, how, &object, if_match).await?;
    Ok(document(&mesh, &doc, StatusCode::OK))
}

async fn id_delete(mesh: Mesh, req: HttpRequest) -> Result<HttpResponse, ApiError> {
    check_token(&mesh, &req)?;
    let id = path_id(&req)?;
    mesh.delete(&id, if_match(&req)?).await?;
    Ok(HttpResponse::NoContent().finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matches(header: &str, version: u64) -> Result<bool, ()> {
        Ok(match tags(header)? {
            None => true,
            Some(tags) => tags
                .iter()
                .any(|t| matches!(t, Tag::Version(v) if *v == version)),
        })
    }

    #[test]
    fn if_match_follows_rfc_9110() {
        assert_eq!(matches("\"3\"", 3), Ok(true));
        assert_eq!(matches("\"1\", \"3\"", 3), Ok(true));
        assert_eq!(matches("\"1\",\"2\"", 3), Ok(false));
        assert_eq!(matches("*", 9), Ok(true));
        assert_eq!(matches("W/\"3\"", 3), Ok(false), "a weak tag never matches");
        assert_eq!(matches("\"abc\"", 3), Ok(false), "not one of ours");
        for bad in ["3", "yesterday", "\"3", "", " , ", "\"a\"b\""] {
            assert!(tags(bad).is_err(), "{bad:?}");
        }
    }
}
