// Turns on TOTP for one of your users with the client in client.js (the guide's "Usage" lines).
// Usage: TFA_API_KEY=tfa_... [TFA_BASE_URL=http://localhost:3001/api] node enroll.js <userId>
'use strict';

const readline = require('node:readline/promises');
const { TwoFactorAuthClient } = require('./client');

async function ask(question) {
  const rl = readline.createInterface({ input: process.stdin, output: process.stdout });
  try {
    return (await rl.question(question)).trim();
  } finally {
    rl.close();
  }
}

// A CommonJS file cannot use top-level await (the guide's usage line does): run in a function.
async function main(userId) {
  const tfaClient = new TwoFactorAuthClient(process.env.TFA_API_KEY, process.env.TFA_BASE_URL);
  const { qrCode, secret } = await tfaClient.setupTOTP(userId);
  console.log(`QR code (open it in a browser, scan it with an authenticator app): ${qrCode}`);
  console.log(`Secret (to type in instead): ${secret}`);
  const code = await ask('Code shown by the app: ');
  const { backupCodes } = await tfaClient.verifyTOTP(userId, code);
  console.log('TOTP is on. Backup codes (each works once; keep them safe):');
  for (const backupCode of backupCodes) console.log(`  ${backupCode}`);
}

if (process.argv.length !== 3) {
  console.error('usage: node enroll.js <userId>');
  process.exit(2);
}
main(process.argv[2]).catch((err) => {
  console.error(`Enrollment failed: ${err.code || err.name}: ${err.message}`);
  process.exit(1);
});
