// The integration guide's Node.js client ("Code Examples" > "Node.js/Express"), copied
// verbatim up to its "// Usage" lines, which tests/clients/node/run.js plays instead.
// Do not edit the copied part: the tests prove the guide works as written.

const axios = require('axios');

class TwoFactorAuthClient {
  constructor(apiKey, baseURL = 'http://localhost:3001/api') {
    this.client = axios.create({
      baseURL,
      headers: { 'X-API-Key': apiKey }
    });
  }

  async setupTOTP(userId) {
    const response = await this.client.post('/2fa/totp/setup', { userId });
    return response.data; // Returns QR code and secret
  }

  async verifyTOTP(userId, code) {
    const response = await this.client.post('/2fa/totp/verify-setup', {
      userId,
      code
    });
    return response.data; // Returns backup codes
  }

  async verify2FA(tempToken, code) {
    const response = await this.client.post('/2fa/verify', {
      tempToken,
      code
    });
    return response.data; // Returns access token
  }
}

module.exports = TwoFactorAuthClient;
