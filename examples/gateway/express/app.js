// An Express application behind a sessionmesh gateway (docs/gateway.md).
//
// It holds no session store and no session code: the sessionmesh node next to
// it hands every request its session in `X-Sessionmesh-*` request headers, and
// the application changes the session by answering with `X-Sessionmesh-*`
// response headers, which the node applies (replicated) before the answer
// leaves.
//
// Run it next to a node started with `--upstream http://127.0.0.1:3000`:
//
//     PORT=3000 node examples/gateway/express/app.js
//
// (Debian's node-express: NODE_PATH=/usr/share/nodejs.)

'use strict';

const express = require('express');

const app = express();
app.use(express.urlencoded({ extended: false }));

// JSON, base64url: the encoding of the session headers.
const encode = (data) => Buffer.from(JSON.stringify(data)).toString('base64url');

// The session as the node handed it (a guest has no id and empty data).
app.use((req, res, next) => {
  req.sessionId = req.get('X-Sessionmesh-Id') || null;
  req.session = JSON.parse(Buffer.from(req.get('X-Sessionmesh-Data') || 'e30=', 'base64url').toString());
  req.entryNode = req.get('X-Sessionmesh-Entry-Node');
  next();
});

app.get('/', (req, res) => {
  const name = req.session.name || 'Guest';
  res.type('text/plain').send(`Hello, ${name} (entered at ${req.entryNode})\n`);
});

const login = (req, res) => {
  const name = String((req.body && req.body.name) || req.query.name || '').trim();
  if (!name) {
    return res.status(400).type('text/plain').send('a name is required\n');
  }
  // Replace the session data; a new id against session fixation.
  res.set('X-Sessionmesh-Replace', encode({ name }));
  res.set('X-Sessionmesh-Renew', '1');
  res.type('text/plain').send('Login successful.\n');
};
app.get('/login', login);
app.post('/login', login);

const logout = (req, res) => {
  res.set('X-Sessionmesh-Delete', '1');
  res.type('text/plain').send('Logged out.\n');
};
app.get('/logout', logout);
app.post('/logout', logout);

// Counts visits with a merge patch: other fields stay as they are.
app.post('/visits', (req, res) => {
  const visits = (req.session.visits || 0) + 1;
  res.set('X-Sessionmesh-Patch', encode({ visits }));
  res.json({ visits });
});

app.get('/whoami', (req, res) => {
  res.json({
    id: req.sessionId,
    session: req.session,
    version: req.get('X-Sessionmesh-Version') || null,
    entry_node: req.entryNode,
    forwarded_for: req.get('X-Forwarded-For') || null,
    forwarded: req.get('Forwarded') || null,
    cookie_header: req.get('Cookie') || null,
    seen: Object.keys(req.headers).filter((h) => h.startsWith('x-sessionmesh-')).sort(),
  });
});

// Reads the body as a stream and tells its size (large uploads).
app.post('/upload', (req, res) => {
  let bytes = 0;
  req.on('data', (chunk) => { bytes += chunk.length; });
  req.on('end', () => res.json({ bytes }));
});

// A server error that also asks for a session change: not applied.
app.get('/broken', (req, res) => {
  res.set('X-Sessionmesh-Replace', encode({ name: 'Mallory' }));
  res.status(500).type('text/plain').send('it broke\n');
});

app.get('/slow', (req, res) => {
  setTimeout(() => res.type('text/plain').send('finally\n'), Number(req.query.seconds || 2) * 1000);
});

// Port 0 picks a free port: say which.
const server = app.listen(Number(process.env.PORT || 3000), '127.0.0.1', () => {
  console.log(`listening on ${server.address().port}`);
});
