// The guide's Pattern 1 (proxy integration), corrected: your backend checks the password, asks the
// 2FA service whether *this* user has 2FA, and only creates a session after the code is verified.
// Usage: TFA_API_KEY=tfa_... [TFA_BASE_URL=http://localhost:3001/api] [PORT=3000] node proxy-app.js
// Maps stand in for "your database" and session store: use real ones (with expiry) in production.
'use strict';

const crypto = require('node:crypto');
const { promisify } = require('node:util');
const express = require('express');
const { TwoFactorAuthClient, TwoFactorError } = require('./client');

const tfa = new TwoFactorAuthClient(process.env.TFA_API_KEY, process.env.TFA_BASE_URL);
const users = new Map(); // email -> { id, email, salt, hash }
const sessions = new Map(); // sessionToken -> userId
const pendingLogins = new Map(); // loginToken -> { userId, expiresAt }: password right, code next
const PENDING_LOGIN_MS = 5 * 60 * 1000;

const scrypt = promisify(crypto.scrypt);
const newToken = () => crypto.randomBytes(32).toString('base64url');

async function hashPassword(password, salt = crypto.randomBytes(16)) {
  return { salt, hash: await scrypt(password, salt, 64) };
}

// Unknown emails are checked against a dummy hash too, so that the response time does not tell
// an attacker which emails have accounts.
const dummy = hashPassword('no such user');

async function checkPassword(user, password) {
  const stored = user || (await dummy);
  const { hash } = await hashPassword(String(password), stored.salt);
  return crypto.timingSafeEqual(hash, stored.hash) && user !== undefined;
}

function createSession(userId) {
  const sessionToken = newToken();
  sessions.set(sessionToken, userId);
  return sessionToken;
}

// Express 4 does not catch rejected promises: without this, one failed call to the 2FA service
// is an unhandled rejection, which stops the whole Node process.
const route = (handler) => (req, res, next) => handler(req, res).catch(next);

const app = express();
app.use(express.json());

app.post('/api/auth/register', route(async (req, res) => {
  const { email, password } = req.body;
  if (typeof email !== 'string' || typeof password !== 'string' || password.length < 8) {
    return res.status(400).json({ error: 'email and a password of 8+ characters are required' });
  }
  if (users.has(email)) return res.status(409).json({ error: 'This email is already registered' });
  const user = { id: crypto.randomUUID(), email, ...(await hashPassword(password)) };
  users.set(email, user);
  res.status(201).json({ user: { id: user.id, email } });
}));

app.post('/api/auth/login', route(async (req, res) => {
  const { email, password } = req.body;

  // 1. Verify the user in your database.
  const user = users.get(email);
  if (!(await checkPassword(user, password))) {
    return res.status(401).json({ error: 'Invalid credentials' });
  }

  // 2. Does this user have 2FA? The service needs to know which user (the guide omits userId).
  const methods = await tfa.getMethods(user.id);
  if (methods.length > 0) {
    // Remember on the server who passed the password step. The guide's verify-2fa trusted a
    // userId sent back by the browser, which lets anyone skip the password of a known user.
    const loginToken = newToken();
    pendingLogins.set(loginToken, { userId: user.id, expiresAt: Date.now() + PENDING_LOGIN_MS });
    return res.json({ requiresTwoFactor: true, loginToken, methods: methods.map((m) => m.type) });
  }

  // 3. No 2FA: create the session. Never send back the stored user (it holds the password hash).
  res.json({ sessionToken: createSession(user.id), user: { id: user.id, email: user.email } });
}));

app.post('/api/auth/verify-2fa', route(async (req, res) => {
  const { loginToken, code } = req.body;
  const pending = pendingLogins.get(loginToken);
  if (!pending || pending.expiresAt < Date.now()) {
    return res.status(401).json({ error: 'Log in with your password first' });
  }
  try {
    await tfa.verifyCode(pending.userId, String(code));
  } catch (err) {
    if (!(err instanceof TwoFactorError)) throw err;
    if (err.status === 429) { // 5 wrong codes in a row lock the user: say for how long
      res.set('Retry-After', String(err.retryAfter));
      return res.status(429).json({ error: 'Too many wrong codes: try again later' });
    }
    if (err.status === 400 || err.status === 401) {
      return res.status(401).json({ error: '2FA verification failed', code: err.code });
    }
    throw err;
  }
  pendingLogins.delete(loginToken);
  res.json({ sessionToken: createSession(pending.userId) });
}));

app.use((err, req, res, next) => {
  if (err.expose) return res.status(err.status).json({ error: err.message }); // e.g. malformed JSON
  // The 2FA service unreachable or refusing the API key: fail closed, never log the user in.
  console.error(err);
  res.status(502).json({ error: 'Two-factor authentication is unavailable, try again later' });
});

const port = Number(process.env.PORT || 3000);
app.listen(port, () => console.log(`Listening on http://localhost:${port}`));
