// Drives the guide's TwoFactorAuthClient for tests/clients/test_guide_clients.py.
// Usage: node run.js '{"op": "setupTOTP", "apiKey": "...", "baseURL": "...", "userId": "..."}'
// Prints the method's return value as JSON, or {"error": <status>, "body": <response body>} when
// the service answers with an error status (axios rejects those). Anything else exits 1.
const TwoFactorAuthClient = require('./guide_client');

const OPS = {
  setupTOTP: (client, cmd) => client.setupTOTP(cmd.userId),
  verifyTOTP: (client, cmd) => client.verifyTOTP(cmd.userId, cmd.code),
  verify2FA: (client, cmd) => client.verify2FA(cmd.tempToken, cmd.code),
};

async function main() {
  const cmd = JSON.parse(process.argv[2]);
  const op = OPS[cmd.op];
  if (!op) throw new Error(`unknown op ${JSON.stringify(cmd.op)}; one of ${Object.keys(OPS).join(', ')}`);
  const client = new TwoFactorAuthClient(cmd.apiKey, cmd.baseURL);
  try {
    process.stdout.write(JSON.stringify(await op(client, cmd)) + '\n');
  } catch (err) {
    if (!err.response) throw err;
    process.stdout.write(JSON.stringify({ error: err.response.status, body: err.response.data }) + '\n');
  }
}

main().catch((err) => {
  console.error(err && err.stack ? err.stack : err);
  process.exit(1);
});
