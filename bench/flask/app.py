"""The Flask application of the gateway benchmark (BENCHMARKS.md, issue 15).

One application, two handlers (read the session's `name` and render the
page; log in: store `name` in a new session), in one of three session modes
chosen at start by `BENCH_FLASK_MODE`:

- `redis`: Flask-Session's Redis interface on a real redis-server
  (`BENCH_REDIS_URL`), set up as its documentation shows
  (`SESSION_TYPE = "redis"`, `SESSION_REDIS`, `Session(app)`), every other
  setting left at its default but the cookie name and a 30-minute lifetime
  (sessionmesh's default `session_ttl`). With the defaults a permanent
  session is written back on every request (`SESSION_REFRESH_EACH_REQUEST`):
  a read costs a Redis `GET`, a `SET` with the new expiry and a `Set-Cookie`.
- `gateway`: behind a sessionmesh node (`--upstream`): the session comes in
  the `X-Sessionmesh-*` request headers and changes go back in response
  headers, as in examples/gateway/flask/app.py (docs/gateway.md).
- `none`: no session at all, the baseline for the gateway's own cost: the
  page greets a fixed `bench`, so that it is the same page.

The handlers are the same code in every mode; only the session object
differs. Served by gunicorn (the harness starts
`python3 -m gunicorn --chdir bench/flask app:app`), never Flask's dev server.
The page is byte for byte the template of bench/src/page.rs (sessionmesh's).
"""

import base64
import html
import json
import os

from flask import Flask, g, request

MODE = os.environ.get("BENCH_FLASK_MODE", "none")
APP_ID = os.environ.get("BENCH_FLASK_ID", "flask")
NAME_REQUIRED = "a name is required"
LOGIN_OK = "Login successful."

app = Flask(__name__)
# The cookie name every contender of the benchmark uses.
app.config["SESSION_COOKIE_NAME"] = "SESSION"

STYLE = (
    "<style>:root{color-scheme:light dark;font-family:system-ui,sans-serif}"
    "body{max-width:34rem;margin:3rem auto;padding:0 1rem;line-height:1.5}"
    "input,button{font:inherit;padding:.35rem .6rem}"
    ".error{color:#c62828}footer{opacity:.7;font-size:.9em}</style>"
)
LOGOUT_FORM = (
    '<form method="post" action="/logout"><button type="submit">Log out</button></form>'
)
LOGIN_FORM = (
    '<form method="post" action="/login"><label>Name <input name="name" autofocus required>'
    '</label> <button type="submit">Log in</button></form>'
)


def page(name):
    """`Hello, <name>` with a logout form, or `Hello, Guest` with a login form."""
    if name is None:
        greeting, form = "Hello, Guest", LOGIN_FORM
    else:
        greeting, form = f"Hello, {html.escape(name)}", LOGOUT_FORM
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>sessionmesh</title>{STYLE}</head>"
        f'<body><main><h1 id="greeting">{greeting}</h1>{form}</main>'
        f'<footer>Served by <code id="served-by">{html.escape(APP_ID)}</code>.</footer>'
        "</body></html>\n"
    )


if MODE == "redis":
    import redis
    from flask import session
    from flask_session import Session

    app.config.update(
        SESSION_TYPE="redis",
        SESSION_REDIS=redis.Redis.from_url(os.environ["BENCH_REDIS_URL"]),
        PERMANENT_SESSION_LIFETIME=1800,
    )
    Session(app)

    def current():
        return session

    def start_session(name, response):
        """A new session holding `name`, under a new id (against fixation)."""
        session.clear()
        session["name"] = name
        app.session_interface.regenerate(session)

elif MODE == "gateway":

    def encode(data):
        """JSON, base64url: the encoding of the session headers."""
        return base64.urlsafe_b64encode(json.dumps(data).encode()).decode()

    @app.before_request
    def load_session():
        """The session as the node handed it (a guest has empty data)."""
        encoded = request.headers.get("X-Sessionmesh-Data", "e30=")
        g.session = json.loads(base64.urlsafe_b64decode(encoded))

    def current():
        return g.session

    def start_session(name, response):
        """Replace the data; a new id against session fixation."""
        response.headers["X-Sessionmesh-Replace"] = encode({"name": name})
        response.headers["X-Sessionmesh-Renew"] = "1"

elif MODE == "none":
    FIXED = {"name": "bench"}

    def current():
        return FIXED

    def start_session(name, response):
        """No session: nothing is stored."""

else:
    raise SystemExit(f"BENCH_FLASK_MODE must be redis, gateway or none, not {MODE!r}")


@app.get("/")
def index():
    return page(current().get("name"))


@app.route("/login", methods=["GET", "POST"])
def login():
    name = request.values.get("name", "").strip()
    if not name:
        return NAME_REQUIRED, 400
    response = app.make_response(LOGIN_OK)
    start_session(name, response)
    return response
