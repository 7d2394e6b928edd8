"""A Flask application behind a sessionmesh gateway (docs/gateway.md).

It holds no session store and no session code: the sessionmesh node next to
it hands every request its session in `X-Sessionmesh-*` request headers, and
the application changes the session by answering with `X-Sessionmesh-*`
response headers, which the node applies (replicated) before the answer
leaves.

Run it next to a node started with `--upstream http://127.0.0.1:5000`:

    PORT=5000 python3 examples/gateway/flask/app.py
"""

import base64
import json
import os
import time

from flask import Flask, Response, g, jsonify, request

app = Flask(__name__)


def encode(data):
    """JSON, base64url: the encoding of the session headers."""
    return base64.urlsafe_b64encode(json.dumps(data).encode()).decode()


@app.before_request
def load_session():
    """The session as the node handed it (a guest has no id and empty data)."""
    g.session_id = request.headers.get("X-Sessionmesh-Id")
    encoded = request.headers.get("X-Sessionmesh-Data", "e30=")
    g.session = json.loads(base64.urlsafe_b64decode(encoded))
    g.entry_node = request.headers.get("X-Sessionmesh-Entry-Node")


@app.get("/")
def greeting():
    name = g.session.get("name", "Guest")
    return f"Hello, {name} (entered at {g.entry_node})\n"


@app.route("/login", methods=["GET", "POST"])
def login():
    name = request.values.get("name", "").strip()
    if not name:
        return "a name is required\n", 400
    response = app.make_response("Login successful.\n")
    # Replace the session data; a new id against session fixation.
    response.headers["X-Sessionmesh-Replace"] = encode({"name": name})
    response.headers["X-Sessionmesh-Renew"] = "1"
    # The application's own cookies pass through untouched.
    response.set_cookie("last_login", name.encode().hex(), samesite="Lax")
    return response


@app.route("/logout", methods=["GET", "POST"])
def logout():
    response = app.make_response("Logged out.\n")
    response.headers["X-Sessionmesh-Delete"] = "1"
    return response


@app.post("/visits")
def visit():
    """Counts visits with a merge patch: other fields stay as they are."""
    visits = g.session.get("visits", 0) + 1
    response = jsonify(visits=visits)
    response.headers["X-Sessionmesh-Patch"] = encode({"visits": visits})
    return response


@app.get("/whoami")
def whoami():
    return jsonify(
        id=g.session_id,
        session=g.session,
        version=request.headers.get("X-Sessionmesh-Version"),
        entry_node=g.entry_node,
        forwarded_for=request.headers.get("X-Forwarded-For"),
        forwarded=request.headers.get("Forwarded"),
        cookie_header=request.headers.get("Cookie"),
        seen=sorted(k for k in request.headers.keys() if k.lower().startswith("x-sessionmesh-")),
    )


@app.post("/upload")
def upload():
    """Reads the body as a stream and tells its size (large uploads)."""
    size = 0
    while chunk := request.stream.read(65536):
        size += len(chunk)
    return jsonify(bytes=size)


@app.get("/broken")
def broken():
    """A server error that also asks for a session change: not applied."""
    response = app.make_response(("it broke\n", 500))
    response.headers["X-Sessionmesh-Replace"] = encode({"name": "Mallory"})
    return response


@app.get("/garbled")
def garbled():
    """An invalid session header: the node answers 502 and changes nothing."""
    response = app.make_response("oops\n")
    response.headers["X-Sessionmesh-Patch"] = "this is not base64url JSON"
    return response


@app.get("/download")
def download():
    """A streamed answer of unknown length (sent chunked)."""
    kib = int(request.args.get("kib", "1024"))
    return Response((b"y" * 1024 for _ in range(kib)), mimetype="application/octet-stream")


@app.get("/slow")
def slow():
    time.sleep(float(request.args.get("seconds", "2")))
    return "finally\n"


def main():
    from werkzeug.serving import make_server

    server = make_server("127.0.0.1", int(os.environ.get("PORT", "5000")), app, threaded=True)
    # Port 0 picks a free port: say which.
    print(f"listening on {server.server_port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
