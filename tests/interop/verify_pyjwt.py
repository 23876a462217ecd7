"""PyJWT verifies a memberd access token found through discovery.

usage: verify_pyjwt.py ISSUER AUDIENCE TOKEN   (exit 0 and print the subject when it verifies)
"""
import json
import sys
import urllib.request

import jwt

issuer, audience, token = sys.argv[1:4]
with urllib.request.urlopen(f"{issuer}/.well-known/oauth-authorization-server") as response:
    metadata = json.load(response)
assert metadata["issuer"] == issuer, metadata
signing_key = jwt.PyJWKClient(metadata["jwks_uri"]).get_signing_key_from_jwt(token)
claims = jwt.decode(
    token,
    signing_key.key,
    algorithms=[signing_key.algorithm_name],
    audience=audience,
    issuer=issuer,
)
assert jwt.get_unverified_header(token)["typ"] == "at+jwt"
print(claims["sub"])
