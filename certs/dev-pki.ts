/**
 * The development PKI: a server CA (HTTPS server certificate, the simulator's TLS certificate and a
 * development push certificate) and a separate device CA that issues device identities.
 *
 * ensureDevPki creates only what is missing or unusable and loads the rest, so restarts keep the same
 * CAs and push topic. Private keys are written with mode 0600. A lock directory keeps two processes that
 * start together from making two PKIs.
 */
import { X509Certificate, createPrivateKey, createPublicKey, randomBytes, randomUUID } from 'node:crypto';
import { chmod, mkdir, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import { isIP } from 'node:net';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import {
  createCaCertificate,
  generateKeyPair,
  issueCertificate,
  pushTopicOf,
  verifyIssuedBy,
} from '../shared/crypto/index.ts';
import type { SubjectFields } from '../shared/crypto/index.ts';

export interface DevPki {
  dir: string;
  caCertPem: string;
  caKeyPem: string;
  serverCertPem: string;
  serverKeyPem: string;
  deviceCaCertPem: string;
  deviceCaKeyPem: string;
  pushCertPem: string;
  pushKeyPem: string;
  pushTopic: string;
  simulatorCertPem: string;
  simulatorKeyPem: string;
  /** the files this call wrote (empty when everything was loaded) */
  created: string[];
}

export const DEV_PKI_FILES = {
  ca: ['ca.pem', 'ca.key.pem'],
  server: ['server.pem', 'server.key.pem'],
  deviceCa: ['device-ca.pem', 'device-ca.key.pem'],
  push: ['push.pem', 'push.key.pem'],
  simulator: ['simulator.pem', 'simulator.key.pem'],
} as const;

type PairName = keyof typeof DEV_PKI_FILES;

const CA_SUBJECT: SubjectFields = { CN: 'VPP MDM Development CA', O: 'VPP MDM' };
const DEVICE_CA_SUBJECT: SubjectFields = { CN: 'VPP MDM Device CA', O: 'VPP MDM' };
const CA_DAYS = 3650;
const TLS_DAYS = 825;
const PUSH_DAYS = 365;
/** a leaf that expires sooner than this is reissued */
const RENEW_BEFORE_MS = 7 * 24 * 60 * 60 * 1000;

const LOCK_STALE_MS = 120_000;
const LOCK_WAIT_MS = 60_000;

interface Pair {
  certPem: string | null;
  keyPem: string | null;
}

async function readOptional(file: string): Promise<string | null> {
  try {
    return await readFile(file, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw err;
  }
}

async function writeAtomic(file: string, data: string, mode: number): Promise<void> {
  const tmp = `${file}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`;
  await writeFile(tmp, data, { mode });
  await chmod(tmp, mode);
  await rename(tmp, file);
}

async function withLock<T>(dir: string, fn: () => Promise<T>): Promise<T> {
  const lock = path.join(dir, '.dev-pki.lock');
  const deadline = Date.now() + LOCK_WAIT_MS;
  for (;;) {
    try {
      await mkdir(lock);
      break;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      const info = await stat(lock).catch(() => null);
      if (info && Date.now() - info.mtimeMs > LOCK_STALE_MS) {
        await rm(lock, { recursive: true, force: true });
        continue;
      }
      if (Date.now() > deadline)
        throw new Error(`timed out waiting for ${lock} (remove it if no process holds it)`);
      await sleep(50);
    }
  }
  try {
    return await fn();
  } finally {
    await rm(lock, { recursive: true, force: true });
  }
}

function keyUsable(keyPem: string | null): keyPem is string {
  if (keyPem === null) return false;
  try {
    return createPrivateKey(keyPem).asymmetricKeyType === 'rsa';
  } catch {
    return false;
  }
}

function parseCert(certPem: string | null): X509Certificate | null {
  if (certPem === null) return null;
  try {
    return new X509Certificate(certPem);
  } catch {
    return null;
  }
}

function matchesKey(cert: X509Certificate, keyPem: string): boolean {
  return cert.checkPrivateKey(createPrivateKey(keyPem));
}

function publicKeyPemOf(keyPem: string): string {
  return createPublicKey(keyPem).export({ type: 'spki', format: 'pem' }).toString();
}

/** A self-signed CA that is still usable with this key (a day's margin). */
function caUsable(cert: X509Certificate | null, keyPem: string, now: Date): cert is X509Certificate {
  if (cert === null || !matchesKey(cert, keyPem)) return false;
  try {
    verifyIssuedBy(cert, cert, new Date(now.getTime() + 24 * 60 * 60 * 1000));
    return true;
  } catch {
    return false;
  }
}

function leafUsable(
  cert: X509Certificate | null,
  keyPem: string,
  ca: X509Certificate,
  now: Date,
  names: string[],
): cert is X509Certificate {
  if (cert === null || !matchesKey(cert, keyPem)) return false;
  try {
    verifyIssuedBy(cert, ca, now);
    verifyIssuedBy(cert, ca, new Date(now.getTime() + RENEW_BEFORE_MS));
  } catch {
    return false;
  }
  return names.every((n) => (isIP(n) ? cert.checkIP(n) !== undefined : cert.checkHost(n) !== undefined));
}

/** Creates what is missing in `dir` (created when absent) and loads the rest. */
export async function ensureDevPki(dir: string, opts: { hostnames?: string[] } = {}): Promise<DevPki> {
  const absDir = path.resolve(dir);
  await mkdir(absDir, { recursive: true });
  return withLock(absDir, () => build(absDir, opts.hostnames ?? []));
}

async function build(dir: string, hostnames: string[]): Promise<DevPki> {
  const now = new Date();
  const created: string[] = [];
  const file = (name: string): string => path.join(dir, name);

  const names = Object.keys(DEV_PKI_FILES) as PairName[];
  const loaded = new Map<PairName, Pair>();
  await Promise.all(
    names.map(async (n) => {
      const [certFile, keyFile] = DEV_PKI_FILES[n];
      const [certPem, keyPem] = await Promise.all([
        readOptional(file(certFile)),
        readOptional(file(keyFile)),
      ]);
      loaded.set(n, { certPem, keyPem });
    }),
  );
  // keys: reuse every readable one, generate the rest in parallel (certificates follow their key)
  const keys = new Map<PairName, string>();
  await Promise.all(
    names.map(async (n) => {
      const existing = loaded.get(n)?.keyPem ?? null;
      if (keyUsable(existing)) {
        keys.set(n, existing);
        return;
      }
      const { privateKeyPem } = await generateKeyPair(2048);
      await writeAtomic(file(DEV_PKI_FILES[n][1]), privateKeyPem, 0o600);
      created.push(DEV_PKI_FILES[n][1]);
      keys.set(n, privateKeyPem);
    }),
  );
  const keyOf = (n: PairName): string => {
    const k = keys.get(n);
    if (k === undefined) throw new Error(`missing key for ${n}`);
    return k;
  };
  const certs = new Map<PairName, string>();
  const saveCert = async (n: PairName, pem: string): Promise<void> => {
    await writeAtomic(file(DEV_PKI_FILES[n][0]), pem, 0o644);
    created.push(DEV_PKI_FILES[n][0]);
    certs.set(n, pem);
  };

  // the two CAs
  for (const [n, subject] of [
    ['ca', CA_SUBJECT],
    ['deviceCa', DEVICE_CA_SUBJECT],
  ] as const) {
    const certPem = loaded.get(n)?.certPem ?? null;
    if (certPem !== null && caUsable(parseCert(certPem), keyOf(n), now)) {
      certs.set(n, certPem);
    } else {
      await saveCert(n, createCaCertificate({ subject, keyPem: keyOf(n), days: CA_DAYS }));
    }
  }
  const caCertPem = certs.get('ca') as string;
  const caX509 = new X509Certificate(caCertPem);

  const tlsNames = [...new Set(['localhost', '127.0.0.1', '::1', ...hostnames.filter((h) => h.length > 0)])];
  const leaves: Array<{
    n: PairName;
    subject: () => SubjectFields;
    kind: 'server' | 'push';
    days: number;
    names: string[];
  }> = [
    {
      n: 'server',
      subject: () => ({ CN: hostnames[0] ?? 'localhost', O: 'VPP MDM' }),
      kind: 'server',
      days: TLS_DAYS,
      names: tlsNames,
    },
    {
      n: 'simulator',
      subject: () => ({ CN: 'VPP MDM Simulator', O: 'VPP MDM' }),
      kind: 'server',
      days: TLS_DAYS,
      names: tlsNames,
    },
    {
      n: 'push',
      subject: () => {
        // keep the topic of a previous push certificate: enrolled devices know it
        const previous = loaded.get('push')?.certPem;
        let topic: string | null = null;
        try {
          topic = previous ? pushTopicOf(previous) : null;
        } catch {
          topic = null;
        }
        const uuid = topic?.match(/^com\.apple\.mgmt\.External\.(.+)$/)?.[1] ?? randomUUID();
        return { UID: `com.apple.mgmt.External.${uuid}`, CN: `APSP:${uuid}` };
      },
      kind: 'push',
      days: PUSH_DAYS,
      names: [],
    },
  ];
  for (const leaf of leaves) {
    const certPem = loaded.get(leaf.n)?.certPem ?? null;
    if (certPem !== null && leafUsable(parseCert(certPem), keyOf(leaf.n), caX509, now, leaf.names)) {
      certs.set(leaf.n, certPem);
      continue;
    }
    await saveCert(
      leaf.n,
      issueCertificate({
        kind: leaf.kind,
        subject: leaf.subject(),
        publicKeyPem: publicKeyPemOf(keyOf(leaf.n)),
        issuerCertPem: caCertPem,
        issuerKeyPem: keyOf('ca'),
        days: leaf.days,
        ...(leaf.names.length > 0 ? { altNames: leaf.names } : {}),
      }),
    );
  }

  const certOf = (n: PairName): string => {
    const c = certs.get(n);
    if (c === undefined) throw new Error(`missing certificate for ${n}`);
    return c;
  };
  const pushCertPem = certOf('push');
  const pushTopic = pushTopicOf(pushCertPem);
  if (pushTopic === null) throw new Error('development push certificate has no topic');
  return {
    dir,
    caCertPem,
    caKeyPem: keyOf('ca'),
    serverCertPem: certOf('server'),
    serverKeyPem: keyOf('server'),
    deviceCaCertPem: certOf('deviceCa'),
    deviceCaKeyPem: keyOf('deviceCa'),
    pushCertPem,
    pushKeyPem: keyOf('push'),
    pushTopic,
    simulatorCertPem: certOf('simulator'),
    simulatorKeyPem: keyOf('simulator'),
    created: created.sort(),
  };
}
