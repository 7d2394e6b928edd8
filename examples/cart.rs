//! A shopping cart on a sessionmesh cluster: an actix-web application with its
//! own `HttpServer`, `App` and routes, whose sessions live in the memory of its
//! own nodes instead of Redis.
//!
//! Start three nodes of it on loopback (see `examples/README.md`):
//!
//! ```text
//! scripts/run-example.sh cart
//! ```
//!
//! or a single node with throwaway secrets: `cargo run --example cart`.
//!
//! ROUTES (JSON in, JSON out):
//!
//! | route | what it does |
//! | --- | --- |
//! | `GET /` | who you are, pages seen, which node served you |
//! | `GET /products` | the catalogue |
//! | `POST /login` | `{"user": "ada", "password": "lovelace"}` or a form: log in (the session moves to a new id, the cart comes along) |
//! | `POST /logout` | forget the session |
//! | `GET /cart` | the cart |
//! | `POST /cart/items` | `{"sku": "tea", "quantity": 2}`: add to the cart (guests too) |
//! | `DELETE /cart/items/{sku}` | remove a line |
//! | `POST /checkout` | place the order (logged in only); empties the cart |
//! | `/healthz`, `/readyz`, `/metrics`, `/dashboard`, `/api/cluster`, ... | sessionmesh's operator routes |
//!
//! Every node answers every route: a request's session is read from the node
//! that holds it (the session's owner, at most one hop away) and the handler's
//! changes go back there before the response leaves. A plain round-robin load
//! balancer in front of the nodes is all it takes.
//!
//! A NODE'S LIFE, in `examples/support` (shared by the examples): read the
//! configuration as the `sessionmesh` binary does (flags, `SESSIONMESH_*`,
//! `--config FILE`); bind the public listener; start the [`Mesh`] (gossip,
//! ring, replication, the internal listener peers talk to), which returns
//! once the node is ready; serve the application ([`serve`], the only part
//! that is the cart's); on SIGTERM or Ctrl-C leave the cluster while still
//! serving (its sessions move to the other nodes), then stop the server, then
//! the mesh.

mod support;

use std::collections::BTreeMap;
use std::process::ExitCode;

use actix_web::http::StatusCode;
use actix_web::middleware::DefaultHeaders;
use actix_web::{web, App, HttpResponse, ResponseError};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sessionmesh::actix::{Session, SessionMiddleware};
use sessionmesh::Mesh;
use support::{Credentials, Node, Serving};

// ---------------------------------------------------------------------------
// The shop: what it sells, who may log in, what the session holds.

/// A product of the catalogue.
#[derive(Serialize)]
struct Product {
    sku: &'static str,
    name: &'static str,
    price_cents: u64,
}

const CATALOGUE: &[Product] = &[
    Product {
        sku: "tea",
        name: "Earl Grey tea, 100 g",
        price_cents: 650,
    },
    Product {
        sku: "mug",
        name: "Enamel mug",
        price_cents: 1200,
    },
    Product {
        sku: "biscuits",
        name: "Shortbread biscuits",
        price_cents: 395,
    },
    Product {
        sku: "teapot",
        name: "Brown Betty teapot",
        price_cents: 2900,
    },
];

fn product(sku: &str) -> Result<&'static Product, ShopError> {
    CATALOGUE
        .iter()
        .find(|p| p.sku == sku)
        .ok_or_else(|| ShopError::UnknownProduct(sku.to_owned()))
}

/// Most of one product in a cart.
const MAX_QUANTITY: u32 = 99;

/// The session's fields. Each is a top-level field of the session's JSON
/// document, and the unit of optimistic concurrency: two requests that change
/// different fields never conflict; two that change the same field (two adds
/// to the cart at once, say) do, and the later one gets a `409 Conflict` that
/// the client retries (see `sessionmesh::actix`).
const USER: &str = "user";
const CART: &str = "cart";
const VIEWS: &str = "views";

/// The cart as the session stores it: quantity by SKU.
type Cart = BTreeMap<String, u32>;

// ---------------------------------------------------------------------------
// Handlers. Each takes the `Session` (read once per request from the node that
// holds it; its changes are applied when the handler returns) and, where it
// says which node served the request, the `Mesh` from the app data.

/// `GET /`: who you are and how many pages you have seen. Guests are not
/// given a session just for looking: only an existing session counts views.
async fn home(session: Session, mesh: Mesh) -> Result<HttpResponse, ShopError> {
    let user: Option<String> = session.get(USER)?;
    let mut views: u64 = session.get(VIEWS)?.unwrap_or(0);
    if session.exists() {
        views += 1;
        session.insert(VIEWS, views)?;
    }
    Ok(HttpResponse::Ok().json(json!({
        "user": user,
        "views": views,
        "node": mesh.node_id(),
        "session_node": session.served_by(),
    })))
}

/// `GET /products`: the catalogue. No session involved.
async fn products() -> HttpResponse {
    HttpResponse::Ok().json(CATALOGUE)
}

/// `POST /login`, JSON or form: checks the password, puts the user in the
/// session and moves the session to a new id (`renew`), so that an id an
/// attacker planted before the login is worth nothing after it. The cart a
/// guest filled comes along.
async fn login(
    session: Session,
    mesh: Mesh,
    credentials: web::Either<web::Json<Credentials>, web::Form<Credentials>>,
) -> Result<HttpResponse, ShopError> {
    let user = credentials
        .into_inner()
        .check()
        .ok_or(ShopError::BadCredentials)?;
    session.insert(USER, user)?;
    session.renew();
    Ok(HttpResponse::Ok().json(json!({ "user": user, "node": mesh.node_id() })))
}

/// `POST /logout`: deletes the session on its nodes and expires the cookie.
async fn logout(session: Session, mesh: Mesh) -> HttpResponse {
    session.purge();
    HttpResponse::Ok().json(json!({ "user": null, "node": mesh.node_id() }))
}

/// A cart as the routes answer it: lines with prices and the total.
#[derive(Serialize)]
struct CartView {
    user: Option<String>,
    lines: Vec<Line>,
    total_cents: u64,
    /// The node that ran the handler.
    node: String,
    /// The node that holds the session (the same, or one hop away).
    session_node: String,
}

#[derive(Serialize)]
struct Line {
    sku: &'static str,
    name: &'static str,
    quantity: u32,
    cents: u64,
}

fn cart_view(session: &Session, mesh: &Mesh, cart: &Cart) -> Result<CartView, ShopError> {
    let lines: Vec<Line> = cart
        .iter()
        // A product the catalogue no longer has is left out.
        .filter_map(|(sku, &quantity)| {
            let product = product(sku).ok()?;
            Some(Line {
                sku: product.sku,
                name: product.name,
                quantity,
                cents: product.price_cents * u64::from(quantity),
            })
        })
        .collect();
    Ok(CartView {
        user: session.get(USER)?,
        total_cents: lines.iter().map(|line| line.cents).sum(),
        lines,
        node: mesh.node_id().to_owned(),
        session_node: session.served_by(),
    })
}

/// `GET /cart`.
async fn show_cart(session: Session, mesh: Mesh) -> Result<HttpResponse, ShopError> {
    let cart: Cart = session.get(CART)?.unwrap_or_default();
    Ok(HttpResponse::Ok().json(cart_view(&session, &mesh, &cart)?))
}

#[derive(Deserialize)]
struct AddItem {
    sku: String,
    #[serde(default = "one")]
    quantity: u32,
}

fn one() -> u32 {
    1
}

/// `POST /cart/items`: adds `quantity` of `sku`. A guest's first add starts
/// their session (and sets the cookie).
async fn add_item(
    session: Session,
    mesh: Mesh,
    item: web::Json<AddItem>,
) -> Result<HttpResponse, ShopError> {
    let product = product(&item.sku)?;
    let mut cart: Cart = session.get(CART)?.unwrap_or_default();
    let quantity = cart
        .get(product.sku)
        .copied()
        .unwrap_or(0)
        .saturating_add(item.quantity);
    if item.quantity == 0 || quantity > MAX_QUANTITY {
        return Err(ShopError::BadQuantity);
    }
    cart.insert(product.sku.to_owned(), quantity);
    session.insert(CART, &cart)?;
    Ok(HttpResponse::Ok().json(cart_view(&session, &mesh, &cart)?))
}

/// `DELETE /cart/items/{sku}`: removes the line (if there is one).
async fn remove_item(
    session: Session,
    mesh: Mesh,
    sku: web::Path<String>,
) -> Result<HttpResponse, ShopError> {
    let mut cart: Cart = session.get(CART)?.unwrap_or_default();
    if cart.remove(sku.as_str()).is_some() {
        session.insert(CART, &cart)?;
    }
    Ok(HttpResponse::Ok().json(cart_view(&session, &mesh, &cart)?))
}

/// `POST /checkout`: places the order of a logged-in user and empties the
/// cart, in one session change: a concurrent add to the cart makes one of the
/// two requests a 409, never an order that misses an acknowledged item.
async fn checkout(session: Session, mesh: Mesh) -> Result<HttpResponse, ShopError> {
    let user: String = session.get(USER)?.ok_or(ShopError::NotLoggedIn)?;
    let cart: Cart = session.get(CART)?.unwrap_or_default();
    let order = cart_view(&session, &mesh, &cart)?;
    if order.lines.is_empty() {
        return Err(ShopError::EmptyCart);
    }
    session.remove(CART);
    let id = format!("{:016x}", rand::random::<u64>());
    tracing::info!(order = %id, %user, total_cents = order.total_cents, "order placed");
    Ok(HttpResponse::Created().json(json!({
        "order": id,
        "user": user,
        "lines": order.lines,
        "total_cents": order.total_cents,
        "node": mesh.node_id(),
    })))
}

/// Any other path.
async fn not_found() -> Result<HttpResponse, ShopError> {
    Err(ShopError::NoRoute)
}

// ---------------------------------------------------------------------------
// Errors: JSON `{"error": code, "message": text}` with a fitting status, as
// sessionmesh's own routes answer.

#[derive(Debug, thiserror::Error)]
enum ShopError {
    #[error("unknown user or wrong password")]
    BadCredentials,
    #[error("log in first")]
    NotLoggedIn,
    #[error("no product {0:?} (see GET /products)")]
    UnknownProduct(String),
    #[error("a cart holds 1 to {MAX_QUANTITY} of each product")]
    BadQuantity,
    #[error("the cart is empty")]
    EmptyCart,
    #[error("{0}")]
    BadRequest(String),
    #[error("no such route")]
    NoRoute,
    /// The session could not be read or written (its nodes are unreachable,
    /// or a concurrent request changed it first): answered as sessionmesh
    /// answers it (503 with `Retry-After`, 409, ...).
    #[error(transparent)]
    Session(#[from] sessionmesh::Error),
}

impl ShopError {
    fn code(&self) -> &'static str {
        match self {
            ShopError::BadCredentials => "bad_credentials",
            ShopError::NotLoggedIn => "not_logged_in",
            ShopError::UnknownProduct(_) => "unknown_product",
            ShopError::BadQuantity => "bad_quantity",
            ShopError::EmptyCart => "empty_cart",
            ShopError::BadRequest(_) => "bad_request",
            ShopError::NoRoute => "no_route",
            ShopError::Session(error) => error.code(),
        }
    }
}

impl ResponseError for ShopError {
    fn status_code(&self) -> StatusCode {
        match self {
            ShopError::BadCredentials | ShopError::NotLoggedIn => StatusCode::UNAUTHORIZED,
            ShopError::UnknownProduct(_) | ShopError::NoRoute => StatusCode::NOT_FOUND,
            ShopError::BadQuantity | ShopError::EmptyCart | ShopError::BadRequest(_) => {
                StatusCode::BAD_REQUEST
            }
            ShopError::Session(error) => error.status_code(),
        }
    }

    fn error_response(&self) -> HttpResponse {
        match self {
            ShopError::Session(error) => error.error_response(),
            _ => HttpResponse::build(self.status_code())
                .json(json!({ "error": self.code(), "message": self.to_string() })),
        }
    }
}

// ---------------------------------------------------------------------------
// The application and a node's life.

/// The shop's routes and sessionmesh's operator routes, in one `App`.
fn app(cfg: &mut web::ServiceConfig) {
    // Bodies that do not parse answer in the shop's JSON error format.
    let json = web::JsonConfig::default()
        .limit(4096)
        .error_handler(|error, _| ShopError::BadRequest(error.to_string()).into());
    let form = web::FormConfig::default()
        .limit(4096)
        .error_handler(|error, _| ShopError::BadRequest(error.to_string()).into());
    cfg.app_data(json)
        .app_data(form)
        .route("/", web::get().to(home))
        .route("/products", web::get().to(products))
        .route("/login", web::post().to(login))
        .route("/logout", web::post().to(logout))
        .route("/cart", web::get().to(show_cart))
        .route("/cart/items", web::post().to(add_item))
        .route("/cart/items/{sku}", web::delete().to(remove_item))
        .route("/checkout", web::post().to(checkout))
        // /healthz, /readyz, /metrics, /dashboard, /api/cluster,
        // /api/cluster/whereis/{id}: for operators and load balancers.
        .configure(sessionmesh::web::operator_routes);
}

/// Serves the shop on the node: the mesh goes into the app data (for the
/// operator routes and handlers that take a `Mesh`) and into the session
/// middleware; `x-served-by` names the node on every answer.
async fn serve(node: Node) -> anyhow::Result<Serving> {
    let mesh = node.mesh.clone();
    support::serve_actix(node, move || {
        App::new()
            .app_data(mesh.clone())
            .wrap(SessionMiddleware::new(mesh.clone()))
            .wrap(
                DefaultHeaders::new().add((sessionmesh::web::SERVED_BY, mesh.node_id().to_owned())),
            )
            .configure(app)
            .default_service(web::to(not_found))
    })
}

#[actix_web::main]
async fn main() -> ExitCode {
    support::main(
        "cart",
        "A shopping cart whose sessions live in a sessionmesh cluster. Takes the flags and \
         SESSIONMESH_* variables of sessionmesh (a node of it runs as a sessionmesh node does).",
        serve,
    )
    .await
}
