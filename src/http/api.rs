//! The JSON session API: by cookie (`/api/session`, for browser JavaScript) and by
//! id (`/api/sessions`, for back-end services in any language).

use std::time::Duration;

use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use bytes::Bytes;
use serde::Deserialize;
use serde_json::value::RawValue;
use subtle::ConstantTimeEq;

use super::{read_body, ApiError, Ctx};
use crate::node::Node;
use crate::replication::OwnerError;
use crate::session::{
    self, now_millis, parse_object, to_raw, Document, Session, SessionId, WriteError,
};

/// Longest accepted `ttl_seconds`: 30 days.
const MAX_TTL_SECONDS: u64 = 30 * 24 * 3600;

pub(super) fn routes(cfg: &mut web::ServiceConfig) {
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

impl Edit {
    /// The new data from the current data and a validated body.
    fn apply(
        self,
        current: &RawValue,
        body: &serde_json::Map<String, serde_json::Value>,
    ) -> Box<RawValue> {
        match self {
            Edit::Replace => to_raw(body),
            Edit::Merge => {
                let mut doc: serde_json::Value = serde_json::from_str(current.get())
                    .unwrap_or_else(|_| serde_json::Value::Object(Default::default()));
                json_patch::merge(&mut doc, &serde_json::Value::Object(body.clone()));
                match doc {
                    serde_json::Value::Object(map) => to_raw(&map),
                    _ => session::empty_object(),
                }
            }
        }
    }
}

fn document(node: &Node, id: &SessionId, s: &Session, status: StatusCode) -> HttpResponse {
    let view = node.view();
    let replicas: Vec<&str> = view
        .ring
        .replicas(id.as_bytes(), node.config().replication_factor.get())
        .map(|n| &**n)
        .collect();
    let doc = Document::new(id, s, node.id(), replicas);
    HttpResponse::build(status)
        .insert_header((header::ETAG, format!("\"{}\"", s.version)))
        .json(doc)
}

fn no_session() -> ApiError {
    ApiError::not_found(
        "no_session",
        "no such session (unknown, expired or deleted)",
    )
}

/// `If-Match: "<version>"` (a bare number is accepted too; `*` means any).
fn if_match(req: &HttpRequest) -> Result<Option<u64>, ApiError> {
    let Some(value) = req.headers().get(header::IF_MATCH) else {
        return Ok(None);
    };
    let value = value.to_str().unwrap_or_default().trim();
    if value == "*" {
        return Ok(None);
    }
    value.trim_matches('"').parse().map(Some).map_err(|_| {
        ApiError::bad_request(
            "bad_if_match",
            "If-Match must be a quoted version, like \"3\"",
        )
    })
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
        .ok_or_else(no_session)
}

/// Checks `Authorization: Bearer <api_token>` when an api token is configured.
fn check_token(node: &Node, req: &HttpRequest) -> Result<(), ApiError> {
    let Some(token) = node.config().api_token.as_ref() else {
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

/// Creates and replicates a session under `id`; answers its document.
async fn new_session(
    node: &Node,
    id: SessionId,
    data: Box<RawValue>,
    ttl: Duration,
) -> Result<HttpResponse, ApiError> {
    let session = Session::new(data, ttl, now_millis());
    node.replication().create(id, session.clone()).await?;
    Ok(document(node, &id, &session, StatusCode::CREATED))
}

/// Reads a session here (with read-through): 200 document or 404.
async fn read_document(node: &Node, id: &SessionId) -> Result<HttpResponse, ApiError> {
    node.replication()
        .read(id, |s| document(node, id, s, StatusCode::OK))
        .await
        .ok_or_else(no_session)
}

/// Applies `edit` with `object` to a session here; 200 document.
async fn edit_document(
    node: &Node,
    id: &SessionId,
    if_match: Option<u64>,
    edit: Edit,
    object: &serde_json::Map<String, serde_json::Value>,
) -> Result<HttpResponse, OwnerError> {
    node.replication()
        .write(
            id,
            if_match,
            |cur| edit.apply(cur, object),
            |s| document(node, id, s, StatusCode::OK),
        )
        .await
}

// ---- by cookie ----

async fn cookie_get(ctx: Ctx) -> Result<HttpResponse, ApiError> {
    let node = ctx.node.clone();
    let id = ctx.cookie_session().ok_or_else(no_session)?;
    ctx.on_owner(&id, Bytes::new(), read_document(&node, &id))
        .await
}

async fn cookie_put(ctx: Ctx, payload: web::Payload) -> Result<HttpResponse, ApiError> {
    cookie_write(ctx, payload, Edit::Replace).await
}

async fn cookie_patch(ctx: Ctx, payload: web::Payload) -> Result<HttpResponse, ApiError> {
    cookie_write(ctx, payload, Edit::Merge).await
}

/// Starts a session for a visitor from a body; 201 with the cookie.
async fn start_session(
    node: &Node,
    id: SessionId,
    edit: Edit,
    body: &[u8],
) -> Result<HttpResponse, ApiError> {
    let object = body_object(body)?;
    let mut response = new_session(
        node,
        id,
        edit.apply(&session::empty_object(), &object),
        node.config().session_ttl,
    )
    .await?;
    response
        .add_cookie(&node.cookies().cookie(&id))
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "cookie", e.to_string()))?;
    Ok(response)
}

/// PUT/PATCH by cookie: edits the visitor's session, or starts one (201 and a
/// cookie) when there is none.
async fn cookie_write(
    ctx: Ctx,
    payload: web::Payload,
    edit: Edit,
) -> Result<HttpResponse, ApiError> {
    let node = ctx.node.clone();
    let body = read_body(&ctx.req, payload, node.config().max_session_bytes).await?;
    let if_match = if_match(&ctx.req)?;
    match ctx.cookie_session() {
        Some(id) => {
            let local = async {
                let object = body_object(&body)?;
                match edit_document(&node, &id, if_match, edit, &object).await {
                    Err(OwnerError::Write(WriteError::NotFound)) if if_match.is_none() => {
                        let fresh = node.mint_owned_id().unwrap_or_else(SessionId::random);
                        start_session(&node, fresh, edit, &body).await
                    }
                    other => Ok(other?),
                }
            };
            ctx.on_owner(&id, body.clone(), local).await
        }
        None => {
            if if_match.is_some() {
                return Err(no_session());
            }
            ctx.create(body.clone(), |id| start_session(&node, id, edit, &body))
                .await
        }
    }
}

async fn cookie_delete(ctx: Ctx) -> Result<HttpResponse, ApiError> {
    let node = ctx.node.clone();
    let id = ctx.cookie_session().ok_or_else(no_session)?;
    let if_match = if_match(&ctx.req)?;
    let local = async {
        node.replication().delete(&id, if_match).await?;
        Ok(HttpResponse::NoContent()
            .cookie(node.cookies().removal())
            .finish())
    };
    ctx.on_owner(&id, Bytes::new(), local).await
}

// ---- by id ----

#[derive(Deserialize)]
struct CreateQuery {
    ttl_seconds: Option<u64>,
}

/// `POST /api/sessions[?ttl_seconds=N]` with the data object as body (empty = `{}`).
async fn create(ctx: Ctx, payload: web::Payload) -> Result<HttpResponse, ApiError> {
    let node = ctx.node.clone();
    check_token(&node, &ctx.req)?;
    let body = read_body(&ctx.req, payload, node.config().max_session_bytes).await?;
    let query: CreateQuery = serde_urlencoded::from_str(ctx.req.query_string()).map_err(|e| {
        ApiError::bad_request(
            "bad_query",
            format!("ttl_seconds must be a whole number of seconds: {e}"),
        )
    })?;
    let ttl = match query.ttl_seconds {
        None => node.config().session_ttl,
        Some(s) if (1..=MAX_TTL_SECONDS).contains(&s) => Duration::from_secs(s),
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
    ctx.create(body, |id| async move {
        let mut response = new_session(&node, id, to_raw(&object), ttl).await?;
        response.headers_mut().insert(
            header::LOCATION,
            header::HeaderValue::from_str(&format!("/api/sessions/{id}")).map_err(|e| {
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "location", e.to_string())
            })?,
        );
        Ok(response)
    })
    .await
}

async fn id_get(ctx: Ctx) -> Result<HttpResponse, ApiError> {
    let node = ctx.node.clone();
    check_token(&node, &ctx.req)?;
    let id = path_id(&ctx.req)?;
    ctx.on_owner(&id, Bytes::new(), read_document(&node, &id))
        .await
}

async fn id_put(ctx: Ctx, payload: web::Payload) -> Result<HttpResponse, ApiError> {
    id_write(ctx, payload, Edit::Replace).await
}

async fn id_patch(ctx: Ctx, payload: web::Payload) -> Result<HttpResponse, ApiError> {
    id_write(ctx, payload, Edit::Merge).await
}

/// PUT/PATCH by id: edits an existing session (ids are minted by the cluster,
/// never chosen by clients, so a write never creates one).
async fn id_write(ctx: Ctx, payload: web::Payload, edit: Edit) -> Result<HttpResponse, ApiError> {
    let node = ctx.node.clone();
    check_token(&node, &ctx.req)?;
    let id = path_id(&ctx.req)?;
    let body = read_body(&ctx.req, payload, node.config().max_session_bytes).await?;
    let if_match = if_match(&ctx.req)?;
    let local = async {
        let object = body_object(&body)?;
        Ok(edit_document(&node, &id, if_match, edit, &object).await?)
    };
    ctx.on_owner(&id, body.clone(), local).await
}

async fn id_delete(ctx: Ctx) -> Result<HttpResponse, ApiError> {
    let node = ctx.node.clone();
    check_token(&node, &ctx.req)?;
    let id = path_id(&ctx.req)?;
    let if_match = if_match(&ctx.req)?;
    let local = async {
        node.replication().delete(&id, if_match).await?;
        Ok(HttpResponse::NoContent().finish())
    };
    ctx.on_owner(&id, Bytes::new(), local).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_follows_rfc_7386() {
        let current = RawValue::from_string(r#"{"a":1,"b":{"c":2,"d":3}}"#.into()).unwrap();
        let patch = parse_object(br#"{"a":null,"b":{"c":5},"e":[1]}"#).unwrap();
        let merged = Edit::Merge.apply(&current, &patch);
        let merged: serde_json::Value = serde_json::from_str(merged.get()).unwrap();
        assert_eq!(merged, serde_json::json!({"b": {"c": 5, "d": 3}, "e": [1]}));
    }

    #[test]
    fn replace_takes_the_body() {
        let current = RawValue::from_string(r#"{"a":1}"#.into()).unwrap();
        let body = parse_object(br#"{"z":true}"#).unwrap();
        assert_eq!(Edit::Replace.apply(&current, &body).get(), r#"{"z":true}"#);
    }
}
