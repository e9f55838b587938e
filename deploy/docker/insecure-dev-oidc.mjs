// INSECURE development OIDC issuer for deploy/docker/compose.yaml. NEVER expose it or trust it
// outside a throwaway setup: it signs a token for any identity anyone asks for.
//
// Discovery (/.well-known/openid-configuration) and the JWKS come from the npm package
// oauth2-mock-server; this script adds one endpoint:
//
//   POST /mint  {"email": "you@example.com"}            -> an ID token (text/plain)
//   POST /mint  {"email": "...", "sub": "...", "any": 1} -> extra claims are copied in
//
// Defaults: aud "sigstore", email_verified true, sub = email, 10-minute lifetime. A claim set to
// null is removed. The key pair is generated at start, so tokens do not survive a restart.
import http from 'node:http';
import { OAuth2Issuer, OAuth2Service } from 'oauth2-mock-server';

const url = process.env.INSECURE_DEV_OIDC_URL ?? 'http://127.0.0.1:8080';
const port = Number(process.env.INSECURE_DEV_OIDC_PORT ?? 8080);

const issuer = new OAuth2Issuer();
// The issuer URL is compared exactly with the `url` in keyless.yaml and the tokens' `iss`.
issuer.url = url;
await issuer.keys.generate('RS256');
const discoveryAndJwks = new OAuth2Service(issuer).requestHandler;

async function mint(body) {
  const requested = body.trim() === '' ? {} : JSON.parse(body);
  if (typeof requested !== 'object' || requested === null || Array.isArray(requested)) {
    throw new Error('the body must be a JSON object of claims');
  }
  const claims = { aud: 'sigstore', email_verified: true, sub: requested.email, ...requested };
  return issuer.buildToken({
    expiresIn: 600,
    scopesOrTransform: (_header, payload) => {
      for (const [name, value] of Object.entries(claims)) {
        if (value === null || value === undefined) delete payload[name];
        else payload[name] = value;
      }
    },
  });
}

http
  .createServer(async (req, res) => {
    if (req.method !== 'POST' || req.url !== '/mint') return discoveryAndJwks(req, res);
    let body = '';
    for await (const chunk of req) body += chunk;
    try {
      const token = await mint(body);
      res.writeHead(200, { 'content-type': 'text/plain' }).end(token);
    } catch (err) {
      res.writeHead(400, { 'content-type': 'text/plain' }).end(`${err}\n`);
    }
  })
  .listen(port, '0.0.0.0', () => {
    console.log(`INSECURE development OIDC issuer ${url} (POST /mint), listening on port ${port}`);
  });
