// jose verifies a memberd access token found through discovery, as an
// RFC 9068 access token (typ at+jwt).
// usage: node verify_jose.mjs ISSUER AUDIENCE TOKEN
import { createRemoteJWKSet, jwtVerify } from 'jose';

const [issuer, audience, token] = process.argv.slice(2);
const metadata = await (await fetch(`${issuer}/.well-known/oauth-authorization-server`)).json();
if (metadata.issuer !== issuer) throw new Error(`issuer ${metadata.issuer}`);
const keys = createRemoteJWKSet(new URL(metadata.jwks_uri));
const { payload } = await jwtVerify(token, keys, { issuer, audience, typ: 'at+jwt' });
console.log(payload.sub);
