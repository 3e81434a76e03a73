// The integration guide's Node.js TwoFactorAuthClient, corrected: Node 20's built-in fetch
// instead of axios, a GET /2fa/methods call that names the user, a code check for your own
// login flow (Pattern 1), and errors that carry the service's error code.
'use strict';

class TwoFactorError extends Error {
  constructor(status, body, retryAfter) {
    const error = (body && body.error) || {};
    super(error.message || `The 2FA service answered HTTP ${status}`);
    this.name = 'TwoFactorError';
    this.status = status; // 400, 401, 429 ...
    this.code = error.code; // 'INVALID_CODE', 'TWO_FACTOR_LOCKED' ...
    this.retryAfter = retryAfter; // seconds, on 429
  }
}

// Every answer is {success, data} or {success: false, error: {code, message}}: data, or throw.
async function readData(response) {
  const body = await response.json().catch(() => null); // a proxy in between may answer HTML
  if (!response.ok) {
    const retryAfter = Number(response.headers.get('retry-after')) || undefined;
    throw new TwoFactorError(response.status, body, retryAfter);
  }
  return body.data;
}

class TwoFactorAuthClient {
  constructor(apiKey, baseURL = 'http://localhost:3001/api') {
    this.apiKey = apiKey;
    this.baseURL = baseURL;
  }

  async request(method, path, body) {
    const response = await fetch(this.baseURL + path, {
      method,
      headers: { 'X-API-Key': this.apiKey, 'Content-Type': 'application/json' },
      body: body === undefined ? undefined : JSON.stringify(body),
      signal: AbortSignal.timeout(10_000),
    });
    return readData(response);
  }

  // Starts TOTP setup: { secret, qrCode, otpauthUrl }. 2FA stays off until verifyTOTP succeeds.
  setupTOTP(userId) {
    return this.request('POST', '/2fa/totp/setup', { userId });
  }

  // Confirms setup with a first code from the user's app and turns TOTP on: { backupCodes }.
  verifyTOTP(userId, code) {
    return this.request('POST', '/2fa/totp/verify-setup', { userId, code });
  }

  // The user's enabled methods: [{ type: 'totp', createdAt, lastUsedAt }, ...]; [] without 2FA.
  getMethods(userId) {
    return this.request('GET', `/2fa/methods?userId=${encodeURIComponent(userId)}`);
  }

  // Checks a login code (TOTP or backup code): { verified: true, method }; 401 if it is wrong.
  verifyCode(userId, code) {
    return this.request('POST', '/2fa/verify', { userId, code });
  }
}

module.exports = { TwoFactorAuthClient, TwoFactorError, readData };
