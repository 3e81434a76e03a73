// The guide's Pattern 2 (direct integration), corrected: the user logs in to the 2FA service
// itself, with a second step when 2FA is on. login() uses only fetch, so it runs in a browser too
// (copy readData from client.js); it needs no API key, which must never reach a browser.
// Usage: [TFA_BASE_URL=http://localhost:3001/api] node direct-login.js <email or username>
'use strict';

const readline = require('node:readline');
const { readData } = require('./client');

async function post(url, body) {
  const response = await fetch(url, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify(body),
  });
  return readData(response); // throws on 401 INVALID_CREDENTIALS, 401 INVALID_CODE, 429 ...
}

// getCode(methods) asks the user for a code (the guide's prompt2FA) and resolves to it.
async function login(emailOrUsername, password, getCode, baseURL = 'http://localhost:3001/api') {
  // Step 1: log in with the password.
  const data = await post(`${baseURL}/auth/login`, { emailOrUsername, password });
  if (!data.requiresTwoFactor) return data.accessToken;

  // Step 2: ask for a code. Only TOTP and backup codes are shown here: a user whose methods are
  // only 'sms' or 'email' gets a code after POST /2fa/challenge { tempToken, method }.
  const code = await getCode(data.methods);

  // Step 3: the temp token alone authorises this call.
  const verified = await post(`${baseURL}/2fa/verify`, { tempToken: data.tempToken, code });
  return verified.accessToken;
}

async function main(emailOrUsername) {
  // One line iterator for both questions: lines that arrive early are queued, not lost.
  const rl = readline.createInterface({ input: process.stdin });
  const lines = rl[Symbol.asyncIterator]();
  const ask = async (question) => {
    process.stdout.write(question);
    const { value } = await lines.next();
    return (value || '').trim();
  };
  try {
    const password = await ask('Password: '); // a demo: a real CLI would not echo it
    const getCode = (methods) => ask(`2FA code (${methods.join(', ')} or a backup code): `);
    const accessToken = await login(emailOrUsername, password, getCode, process.env.TFA_BASE_URL);
    console.log(`\nLogged in. Access token: ${accessToken}`);
  } finally {
    rl.close();
  }
}

module.exports = { login };

if (require.main === module) {
  if (process.argv.length !== 3) {
    console.error('usage: node direct-login.js <email or username>');
    process.exit(2);
  }
  main(process.argv[2]).catch((err) => {
    console.error(`\nLogin failed: ${err.code || err.name}: ${err.message}`);
    process.exit(1);
  });
}
