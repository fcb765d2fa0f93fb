import { X509Certificate } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { rootCertificates } from 'node:tls';

const PEM_BLOCK = /-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g;

/**
 * The certificates Node trusts by default for outbound TLS: its bundled roots plus those of the file
 * named by `NODE_EXTRA_CA_CERTS`, which Node adds to its default store at start-up but which a
 * connection given its own `ca` list would otherwise lose. Certificates in that file that do not parse
 * are left out (Node itself warns about the file at start-up).
 */
export function defaultTrust(env: NodeJS.ProcessEnv = process.env): string[] {
  const extra: string[] = [];
  const file = env.NODE_EXTRA_CA_CERTS;
  if (file) {
    let text = '';
    try {
      text = readFileSync(file, 'utf8');
    } catch {
      text = '';
    }
    for (const pem of text.match(PEM_BLOCK) ?? []) {
      try {
        new X509Certificate(pem);
        extra.push(pem);
      } catch {
        // not a certificate: skipped
      }
    }
  }
  return [...rootCertificates, ...extra];
}

/**
 * The `ca` option for an outbound connection that must also trust `extraPems` (the development CA for the
 * simulator's services): Node's default trust plus them; `undefined` (Node's default) when there are none.
 */
export function outboundCa(
  extraPems: readonly string[],
  env: NodeJS.ProcessEnv = process.env,
): string[] | undefined {
  return extraPems.length > 0 ? [...defaultTrust(env), ...extraPems] : undefined;
}
