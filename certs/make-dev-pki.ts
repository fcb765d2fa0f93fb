/**
 * npm run certs -- [--dir data/certs] [--hostname name]...
 * Makes (or loads) the development PKI and prints what it holds. Never prints private keys.
 */
import { X509Certificate } from 'node:crypto';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { fingerprint } from '../shared/crypto/index.ts';
import { DEV_PKI_FILES, ensureDevPki } from './dev-pki.ts';

const usage = `usage: npm run certs -- [--dir <directory>] [--hostname <name or IP>]...
  --dir        where the PKI lives (default data/certs); created when missing
  --hostname   extra name for the HTTPS server certificate (repeatable); localhost, 127.0.0.1 and ::1 are always in it`;

async function main(): Promise<number> {
  let values: { dir?: string | undefined; hostname?: string[] | undefined; help?: boolean | undefined };
  try {
    ({ values } = parseArgs({
      options: {
        dir: { type: 'string', default: 'data/certs' },
        hostname: { type: 'string', multiple: true },
        help: { type: 'boolean', short: 'h' },
      },
    }));
  } catch (err) {
    console.error((err as Error).message);
    console.error(usage);
    return 2;
  }
  if (values.help) {
    console.log(usage);
    return 0;
  }
  const dir = path.resolve(values.dir ?? 'data/certs');
  const pki = await ensureDevPki(dir, { hostnames: values.hostname ?? [] });

  console.log(`development PKI in ${pki.dir}`);
  const rows: Array<[string, string, string]> = [
    ['server CA (clients trust this)', DEV_PKI_FILES.ca[0], pki.caCertPem],
    ['HTTPS server', DEV_PKI_FILES.server[0], pki.serverCertPem],
    ['device CA', DEV_PKI_FILES.deviceCa[0], pki.deviceCaCertPem],
    ['development push', DEV_PKI_FILES.push[0], pki.pushCertPem],
    ['simulator TLS', DEV_PKI_FILES.simulator[0], pki.simulatorCertPem],
  ];
  for (const [label, file, pem] of rows) {
    const cert = new X509Certificate(pem);
    const state = pki.created.includes(file) ? 'created' : 'loaded';
    console.log(`\n${label}: ${path.join(pki.dir, file)} (${state})`);
    console.log(`  subject      ${cert.subject.replace(/\n/g, ', ')}`);
    if (cert.subjectAltName) console.log(`  names        ${cert.subjectAltName}`);
    console.log(`  valid until  ${new Date(cert.validTo).toISOString()}`);
    console.log(`  sha256       ${fingerprint(cert.raw)}`);
  }
  console.log(`\npush topic: ${pki.pushTopic}`);
  const keys = pki.created.filter((f) => f.endsWith('.key.pem'));
  if (keys.length > 0) console.log(`new private keys (mode 0600): ${keys.join(', ')}`);
  return 0;
}

main().then(
  (code) => {
    process.exitCode = code;
  },
  (err: unknown) => {
    console.error(err instanceof Error ? err.message : err);
    process.exitCode = 1;
  },
);
