// oauth4webapi validates a memberd access token as a resource server does
// (RFC 9068, validateJwtAccessToken), with the issuer's metadata from
// RFC 8414 discovery. allowInsecureRequests only lets it speak http to the
// test server on loopback.
// usage: node verify_oauth4webapi.mjs ISSUER AUDIENCE TOKEN
import * as oauth from 'oauth4webapi';

const [issuer, audience, token] = process.argv.slice(2);
const insecure = { [oauth.allowInsecureRequests]: true };
const issuerUrl = new URL(issuer);
const as = await oauth.processDiscoveryResponse(
  issuerUrl,
  await oauth.discoveryRequest(issuerUrl, { algorithm: 'oauth2', ...insecure }),
);
const request = new Request(`${issuer}/me`, { headers: { authorization: `Bearer ${token}` } });
const claims = await oauth.validateJwtAccessToken(as, request, audience, insecure);
console.log(claims.sub);
