/** Shared set-up for the APNs gateway tests: one dev PKI per run, gateways, node-apn providers. */
import { randomBytes, randomUUID } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import http2 from 'node:http2';
import type { OutgoingHttpHeaders } from 'node:http2';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import apn from '@parse/node-apn';
import { ensureDevPki } from '../../../certs/dev-pki.ts';
import type { DevPki } from '../../../certs/dev-pki.ts';
import { ApnsGateway } from '../../../simulator/apns/gateway.ts';
import type { ApnsGatewayOptions } from '../../../simulator/apns/gateway.ts';

let pkiPromise: Promise<{ pki: DevPki; dir: string }> | null = null;

export function devPki(): Promise<DevPki> {
  pkiPromise ??= (async () => {
    const dir = await mkdtemp(path.join(tmpdir(), 'apns-gateway-test-'));
    return { pki: await ensureDevPki(dir), dir };
  })();
  return pkiPromise.then((p) => p.pki);
}

export async function removeDevPki(): Promise<void> {
  if (pkiPromise === null) return;
  const { dir } = await pkiPromise;
  pkiPromise = null;
  await rm(dir, { recursive: true, force: true });
}

export async function startGateway(
  extra: Partial<ApnsGatewayOptions> = {},
): Promise<{ gateway: ApnsGateway; port: number; url: string; pki: DevPki }> {
  const pki = await devPki();
  const gateway = new ApnsGateway({
    port: 0,
    tlsCertPem: pki.simulatorCertPem,
    tlsKeyPem: pki.simulatorKeyPem,
    clientCaPems: [pki.caCertPem],
    ...extra,
  });
  const { port, url } = await gateway.start();
  return { gateway, port, url, pki };
}

export function makeProvider(
  pki: DevPki,
  port: number,
  extra: Partial<apn.ProviderOptions> = {},
): apn.Provider {
  return new apn.Provider({
    cert: pki.pushCertPem,
    key: pki.pushKeyPem,
    ca: [pki.caCertPem],
    address: '127.0.0.1',
    port,
    ...extra,
  });
}

export function shutdown(provider: apn.Provider): Promise<void> {
  // node-apn's shutdown does not return its promise (despite its typings): wait on the callback
  return new Promise((resolve) => {
    void provider.shutdown(() => resolve());
  });
}

export function mdmNote(
  pushMagic: string,
  topic: string,
  extra: { expiry?: number; pushType?: string } = {},
): apn.Notification {
  const note = new apn.Notification();
  note.mdm = pushMagic;
  note.topic = topic;
  note.pushType = (extra.pushType ?? 'mdm') as apn.NotificationPushType;
  if (extra.expiry !== undefined) note.expiry = extra.expiry;
  return note;
}

export function newToken(): string {
  return randomBytes(32).toString('hex');
}

export function newMagic(): string {
  return randomUUID().toUpperCase();
}

/** Polls `cond` until it holds or the deadline passes (then throws with `what`). */
export async function waitFor(cond: () => boolean, what: string, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(10);
  }
}

/** One raw HTTP/2 request to the gateway (for what node-apn cannot send). */
export async function rawRequest(
  url: string,
  headers: OutgoingHttpHeaders,
  body: string | undefined,
  tls: { ca: string; cert?: string; key?: string },
): Promise<{ status: number; headers: Record<string, string>; body: string }> {
  const session = http2.connect(url, tls);
  try {
    return await new Promise((resolve, reject) => {
      session.once('error', reject);
      const req = session.request(headers);
      let status = 0;
      const out: Record<string, string> = {};
      let text = '';
      req.setEncoding('utf8');
      req.on('response', (h) => {
        status = Number(h[':status']);
        for (const [k, v] of Object.entries(h)) if (typeof v === 'string') out[k] = v;
      });
      req.on('data', (c: string) => {
        text += c;
      });
      req.once('end', () => resolve({ status, headers: out, body: text }));
      req.once('error', reject);
      req.end(body);
    });
  } finally {
    session.destroy();
  }
}
