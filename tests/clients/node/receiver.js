// The integration guide's Express webhook receiver ("Webhooks" > "Node.js/Express"), run as
// published behind a recording/control layer, for the webhook dispatcher's tests
// (tests/fakes/webhook_receivers.py drives it).
// Usage: node receiver.js <port>   (0 = any free port; prints "@@LISTENING <port>" once listening)
//
// stdout carries three kinds of line: "@@LISTENING <port>", one "@@REC <json>" per request to
// /webhooks/2fa (written when its response finishes), and the guide's own console.log lines,
// which stay as the guide wrote them. POST /__control {secret?, failNext?, failStatus?} sets
// WEBHOOK_SECRET (the guide reads it on every request) and makes the next `failNext` deliveries
// answer `failStatus` (default 500) without reaching the guide's handler.
const fs = require('fs');

const REC = '@@REC ';
const HOOK_PATH = '/webhooks/2fa';

// --- Set-up the guide assumes (an Express app that parses JSON bodies) ---------------------------

const express = require('express');
const app = express();

let failNext = 0;
let failStatus = 500;

// Registered before the body parser, so that deliveries it rejects (bad JSON: 400, too large: 413)
// are recorded too.
app.use((req, res, next) => {
  if (req.path !== HOOK_PATH) return next();
  const receivedAt = Date.now();
  res.on('finish', () => {
    const record = {
      type: 'request',
      headers: req.headers,
      rawBody: req.rawBody === undefined ? null : req.rawBody,
      status: res.statusCode,
      receivedAt,
    };
    process.stdout.write(REC + JSON.stringify(record) + '\n');
  });
  return next();
});

// The guide signs JSON.stringify(req.body); the raw bytes are kept to show what was really sent.
app.use(express.json({ verify: (req, res, buf) => { req.rawBody = buf.toString('utf8'); } }));

app.post('/__control', (req, res) => {
  const body = req.body || {};
  if (body.secret !== undefined) process.env.WEBHOOK_SECRET = String(body.secret);
  if (body.failNext !== undefined) {
    failNext = Number(body.failNext);
    failStatus = body.failStatus === undefined ? 500 : Number(body.failStatus);
  }
  res.json({ ok: true });
});

app.use(HOOK_PATH, (req, res, next) => {
  if (failNext <= 0) return next();
  failNext -= 1;
  return res.status(failStatus).json({ error: 'injected failure' });
});

// --- Copied from the integration guide unchanged: do not edit between the markers -----------------
// >>> guide code >>>
// backend/webhooks/2fa.js
app.post('/webhooks/2fa', (req, res) => {
  const signature = req.headers['x-webhook-signature'];
  const event = req.headers['x-webhook-event'];
  const payload = JSON.stringify(req.body);

  // Verify signature
  const crypto = require('crypto');
  const expectedSignature = crypto
    .createHmac('sha256', process.env.WEBHOOK_SECRET)
    .update(payload)
    .digest('hex');

  if (signature !== expectedSignature) {
    return res.status(401).json({ error: 'Invalid signature' });
  }

  // Handle events
  switch (event) {
    case '2fa.enabled':
      console.log(`User ${req.body.data.userId} enabled 2FA`);
      // Update your database, send notification, etc.
      break;

    case '2fa.verified':
      console.log(`User ${req.body.data.userId} verified 2FA`);
      break;

    case '2fa.failed':
      console.log(`User ${req.body.data.userId} failed 2FA attempt`);
      // Track failed attempts, lock account after X failures
      break;
  }

  res.json({ success: true });
});
// <<< guide code <<<

// --- Start ----------------------------------------------------------------------------------------

const server = app.listen(Number(process.argv[2] || 0), '127.0.0.1', () => {
  process.stdout.write(`@@LISTENING ${server.address().port}\n`);
});

// Started with a pipe on stdin (as the Python helper does), exit when that pipe closes, so that a
// killed test run leaves no receiver behind.
if (fs.fstatSync(0).isFIFO()) {
  process.stdin.on('end', () => process.exit(0));
  process.stdin.resume();
}
