"""The integration guide's Python client ("Code Examples" > "Python"), copied verbatim up to its
"# Usage" lines, which tests/clients/test_guide_clients.py plays instead (at import time they
would call a service on localhost:3001). Do not edit the copied part: the tests prove the guide
works as written."""
# The guide's own text keeps its unused imports and spacing, so no linter rules apply here:
# ruff: noqa

import requests
import hmac
import hashlib

class TwoFactorAuthClient:
    def __init__(self, api_key, base_url='http://localhost:3001/api'):
        self.api_key = api_key
        self.base_url = base_url

    def _headers(self):
        return {'X-API-Key': self.api_key, 'Content-Type': 'application/json'}

    def setup_totp(self, user_id):
        response = requests.post(
            f'{self.base_url}/2fa/totp/setup',
            json={'userId': user_id},
            headers=self._headers()
        )
        return response.json()

    def verify_2fa(self, temp_token, code):
        response = requests.post(
            f'{self.base_url}/2fa/verify',
            json={'tempToken': temp_token, 'code': code},
            headers=self._headers()
        )
        return response.json()
