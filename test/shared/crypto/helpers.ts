import { spawnSync } from 'node:child_process';
import type { SpawnSyncReturns } from 'node:child_process';
import { createPublicKey } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { createCaCertificate, generateKeyPair, issueCertificate } from '../../../shared/crypto/index.ts';
import type { IssueCertificateOptions, SubjectFields } from '../../../shared/crypto/index.ts';

export const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');
/** Third-party vectors live beside the repository, never in it. */
export const vectorsDir = path.resolve(repoRoot, '../shared/vectors');

/** The path of a vector file, or null (with a visible warning) when the vectors are absent. */
export function vectorPath(relative: string): string | null {
  const p = path.join(vectorsDir, relative);
  if (existsSync(p)) return p;
  console.warn(`    [skip] test vector ${p} is absent`);
  return null;
}

let opensslChecked: boolean | null = null;
export function hasOpenssl(): boolean {
  if (opensslChecked === null) {
    const r = spawnSync('openssl', ['version'], { encoding: 'utf8' });
    opensslChecked = r.error === undefined && r.status === 0;
    if (!opensslChecked) console.warn('    [skip] openssl is not installed: interop checks are skipped');
  }
  return opensslChecked;
}

export function openssl(args: string[], input?: Buffer | string): SpawnSyncReturns<Buffer> {
  return spawnSync('openssl', args, input === undefined ? {} : { input });
}

export async function withTempDir<T>(fn: (dir: string) => Promise<T>): Promise<T> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'vpp-mdm-crypto-'));
  try {
    return await fn(dir);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

export interface TestCa {
  certPem: string;
  keyPem: string;
}

export interface TestIdentity {
  certPem: string;
  keyPem: string;
}

export async function makeCa(subject: SubjectFields): Promise<TestCa> {
  const { privateKeyPem } = await generateKeyPair();
  return {
    certPem: createCaCertificate({ subject, keyPem: privateKeyPem, days: 30 }),
    keyPem: privateKeyPem,
  };
}

export async function makeIdentity(
  ca: TestCa,
  overrides: Partial<IssueCertificateOptions> = {},
  keyPem?: string,
): Promise<TestIdentity> {
  const privateKeyPem = keyPem ?? (await generateKeyPair()).privateKeyPem;
  const certPem = issueCertificate({
    kind: 'client',
    subject: { CN: 'TEST-DEVICE' },
    publicKeyPem: createPublicKey(privateKeyPem).export({ type: 'spki', format: 'pem' }).toString(),
    issuerCertPem: ca.certPem,
    issuerKeyPem: ca.keyPem,
    days: 30,
    ...overrides,
  });
  return { certPem, keyPem: privateKeyPem };
}
