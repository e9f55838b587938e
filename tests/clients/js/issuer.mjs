// An OIDC issuer on loopback for the interop tests, built on the npm package oauth2-mock-server:
// discovery and JWKS come from the package; POST /mint returns a token with the claims in the JSON
// body (a claim set to null is removed). Prints {"url": ...} once listening; exits when stdin closes
// so it never outlives the test that started it.
import http from 'node:http';
import { OAuth2Issuer, OAuth2Service } from 'oauth2-mock-server';

const issuer = new OAuth2Issuer();
await issuer.keys.generate('RS256');
const service = new OAuth2Service(issuer);
const mockHandler = service.requestHandler;

async function readBody(req) {
  const chunks = [];
  for await (const chunk of req) chunks.push(chunk);
  return Buffer.concat(chunks).toString('utf8');
}

const server = http.createServer(async (req, res) => {
  if (req.method === 'POST' && req.url === '/mint') {
    try {
      const claims = JSON.parse(await readBody(req));
      const token = await issuer.buildToken({
        expiresIn: 600,
        scopesOrTransform: (_header, payload) => {
          for (const [name, value] of Object.entries(claims)) {
            if (value === null) delete payload[name];
            else payload[name] = value;
          }
        },
      });
      res.writeHead(200, { 'content-type': 'text/plain' });
      res.end(token);
    } catch (err) {
      res.writeHead(400, { 'content-type': 'text/plain' });
      res.end(String(err));
    }
    return;
  }
  mockHandler(req, res);
});

server.listen(0, '127.0.0.1', () => {
  const { port } = server.address();
  // Set explicitly: the package would otherwise name itself http://localhost:PORT, and issuer
  // matching is an exact string comparison.
  issuer.url = `http://127.0.0.1:${port}`;
  process.stdout.write(JSON.stringify({ url: issuer.url }) + '\n');
});

process.stdin.resume();
process.stdin.on('end', () => process.exit(0));
