//! The actix-web integration on real nodes: an application's own handlers,
//! with `SessionMiddleware` and the `Session` extractor, on three nodes.

mod common;

use std::collections::HashSet;

use actix_web::{web, HttpResponse};
use common::{set_cookie, Cluster};
use sessionmesh::actix::{Session, SessionMiddleware};

/// A counter application: its own routes, its sessions in the cluster.
fn counter(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::scope("/counter")
            .wrap(SessionMiddleware::default())
            .route("/start", web::post().to(start))
            .route("/increment", web::post().to(increment))
            .route("/mark/{field}", web::post().to(mark))
            .route("", web::get().to(show)),
    );
}

async fn start(session: Session) -> actix_web::Result<HttpResponse> {
    session.insert("count", 0)?;
    Ok(HttpResponse::Ok().finish())
}

async fn increment(session: Session) -> actix_web::Result<HttpResponse> {
    let count: u64 = session.get("count")?.unwrap_or(0) + 1;
    session.insert("count", count)?;
    Ok(HttpResponse::Ok().body(count.to_string()))
}

/// Writes a field it never read.
async fn mark(session: Session, field: web::Path<String>) -> actix_web::Result<HttpResponse> {
    session.insert(field.into_inner(), true)?;
    Ok(HttpResponse::Ok().finish())
}

async fn show(session: Session) -> actix_web::Result<HttpResponse> {
    let count: u64 = session.get("count")?.unwrap_or(0);
    Ok(HttpResponse::Ok()
        .insert_header(("x-session-served-by", session.served_by()))
        .body(count.to_string()))
}

/// No lost update: 20 clients increment one session's counter through three
/// entry nodes, each retrying an increment refused as a conflict (409) until
/// it is acknowledged.
///
/// 1. start a session on node1 (count = 0);
/// 2. 20 clients × 10 increments, client `c`'s `i`-th through node `(c + i) % 3`;
/// 3. every acknowledged increment answered a different count, and the counts
///    are exactly 1..=200;
/// 4. the count read through every node is 200: the acknowledged increments.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_clients_incrementing_through_three_nodes_lose_no_update() {
    let cluster = Cluster::start_serving(3, |_| {}, counter).await;
    let http = &cluster.http;
    let started = http
        .post(cluster.url(0, "/counter/start"))
        .send()
        .await
        .unwrap();
    assert_eq!(started.status(), 200);
    let cookie = set_cookie(&started, "SESSION").expect("a session cookie");
    const CLIENTS: usize = 20;
    const EACH: usize = 10;
    let clients = (0..CLIENTS).map(|c| {
        let cookie = cookie.clone();
        let cluster = &cluster;
        async move {
            let mut answers = Vec::new();
            let mut conflicts = 0;
            for i in 0..EACH {
                let url = cluster.url((c + i) % 3, "/counter/increment");
                // Bounded: a conflict means another increment won, so this
                // one wins within as many tries as there are clients.
                let mut acknowledged = None;
                for _ in 0..CLIENTS * EACH {
                    let response = cluster
                        .http
                        .post(&url)
                        .header("cookie", &cookie)
                        .send()
                        .await
                        .unwrap();
                    match response.status().as_u16() {
                        200 => {
                            acknowledged =
                                Some(response.text().await.unwrap().parse::<u64>().unwrap());
                            break;
                        }
                        409 => {
                            let body: serde_json::Value = response.json().await.unwrap();
                            assert_eq!(body["error"], "session_conflict");
                            conflicts += 1;
                        }
                        status => panic!(
                            "increment answered {status}: {}",
                            response.text().await.unwrap()
                        ),
                    }
                }
                answers.push(acknowledged.expect("an increment is acknowledged within the bound"));
            }
            (answers, conflicts)
        }
    });
    let results = futures_util::future::join_all(clients).await;
    let conflicts: usize = results.iter().map(|(_, c)| c).sum();
    let counts: Vec<u64> = results.into_iter().flat_map(|(a, _)| a).collect();
    let distinct: HashSet<u64> = counts.iter().copied().collect();
    eprintln!(
        "{} acknowledged increments, {conflicts} conflicts retried",
        counts.len()
    );
    assert_eq!(
        distinct.len(),
        counts.len(),
        "two increments saw the same count"
    );
    assert_eq!(
        distinct,
        (1..=(CLIENTS * EACH) as u64).collect::<HashSet<_>>()
    );
    for i in 0..3 {
        let count = http
            .get(cluster.url(i, "/counter"))
            .header("cookie", &cookie)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert_eq!(
            count,
            (CLIENTS * EACH).to_string(),
            "through node {}",
            i + 1
        );
    }
    cluster.shutdown().await;
}

/// Requests that change different fields of one session never conflict:
/// 30 concurrent requests, each setting a field of its own through rotating
/// nodes, all succeed and every field is there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writes_to_different_fields_all_succeed() {
    let cluster = Cluster::start_serving(3, |_| {}, counter).await;
    let http = &cluster.http;
    let started = http
        .post(cluster.url(1, "/counter/start"))
        .send()
        .await
        .unwrap();
    let cookie = set_cookie(&started, "SESSION").unwrap();
    let marks = (0..30).map(|f| {
        http.post(cluster.url(f % 3, &format!("/counter/mark/f{f}")))
            .header("cookie", &cookie)
            .send()
    });
    for response in futures_util::future::join_all(marks).await {
        assert_eq!(response.unwrap().status(), 200);
    }
    let id = cookie
        .trim_start_matches("SESSION=")
        .split('.')
        .next()
        .unwrap()
        .parse::<sessionmesh::SessionId>()
        .unwrap();
    let doc = cluster.nodes[2].mesh().get(&id).await.unwrap();
    for f in 0..30 {
        assert_eq!(
            doc.get::<bool>(&format!("f{f}")).unwrap(),
            Some(true),
            "f{f}"
        );
    }
    assert_eq!(doc.get::<u64>("count").unwrap(), Some(0));
    cluster.shutdown().await;
}

/// An application that shares the mesh as actix-web shared state
/// (`web::Data<Mesh>`, as it shares everything else) gets the middleware, the
/// `Session` extractor and the `Mesh` extractor working the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_mesh_may_be_shared_as_web_data() {
    use actix_web::test;
    let cluster = Cluster::start(1).await;
    let mesh = cluster.nodes[0].mesh().clone();
    let app = test::init_service(
        actix_web::App::new()
            .app_data(web::Data::new(mesh))
            .wrap(SessionMiddleware::default())
            .route(
                "/visit",
                web::post().to(|session: Session| async move {
                    let visits: u64 = session.get("visits")?.unwrap_or(0) + 1;
                    session.insert("visits", visits)?;
                    Ok::<_, actix_web::Error>(HttpResponse::Ok().body(visits.to_string()))
                }),
            )
            .route(
                "/node",
                web::get().to(|mesh: sessionmesh::Mesh| async move {
                    HttpResponse::Ok().body(mesh.node_id().to_owned())
                }),
            ),
    )
    .await;
    let first =
        test::call_service(&app, test::TestRequest::post().uri("/visit").to_request()).await;
    assert_eq!(first.status(), 200);
    let cookie = first
        .response()
        .cookies()
        .next()
        .expect("a session cookie")
        .into_owned();
    assert_eq!(test::read_body(first).await, "1");
    let second = test::call_service(
        &app,
        test::TestRequest::post()
            .uri("/visit")
            .cookie(cookie)
            .to_request(),
    )
    .await;
    assert_eq!(test::read_body(second).await, "2");
    let node = test::call_service(&app, test::TestRequest::get().uri("/node").to_request()).await;
    assert_eq!(test::read_body(node).await, cluster.id(0));
    cluster.shutdown().await;
}
