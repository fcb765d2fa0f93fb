/**
 * A minimal HTTPS MDM endpoint for the simulator's unit tests: serves an enrollment profile built here
 * (fresh CA, server certificate, device identity), records every check-in and connect request as received,
 * and answers connects from a queue of commands. It checks nothing: the tests do.
 */
import { X509Certificate } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import https from 'node:https';
import type { TLSSocket } from 'node:tls';
import type { AddressInfo } from 'node:net';
import {
  createCaCertificate,
  generateKeyPair,
  issueCertificate,
  makePkcs12,
  signAttached,
} from '../../../shared/crypto/index.ts';
import { encodeCommand } from '../../../shared/mdm/index.ts';
import type { CommandPayload } from '../../../shared/mdm/index.ts';
import { encodePlist } from '../../../shared/plist/index.ts';

export interface RecordedRequest {
  method: string;
  path: string;
  headers: Record<string, string | string[] | undefined>;
  body: Buffer;
  /** DER of the TLS client certificate, when one was presented */
  peerCertificate: Buffer | null;
}

export interface TestPki {
  caCertPem: string;
  caKeyPem: string;
  serverCertPem: string;
  serverKeyPem: string;
  deviceCaCertPem: string;
  deviceCaKeyPem: string;
}

let cachedPki: Promise<TestPki> | null = null;

/** One PKI per test process (RSA key generation is slow). */
export function testPki(): Promise<TestPki> {
  cachedPki ??= (async () => {
    const [ca, server, deviceCa] = await Promise.all([
      generateKeyPair(),
      generateKeyPair(),
      generateKeyPair(),
    ]);
    const caCertPem = createCaCertificate({
      subject: { CN: 'Simulator Test CA' },
      keyPem: ca.privateKeyPem,
      days: 30,
    });
    const serverCertPem = issueCertificate({
      kind: 'server',
      subject: { CN: '127.0.0.1' },
      publicKeyPem: server.publicKeyPem,
      issuerCertPem: caCertPem,
      issuerKeyPem: ca.privateKeyPem,
      days: 30,
      altNames: ['127.0.0.1', 'localhost'],
    });
    const deviceCaCertPem = createCaCertificate({
      subject: { CN: 'Simulator Test Device CA' },
      keyPem: deviceCa.privateKeyPem,
      days: 30,
    });
    return {
      caCertPem,
      caKeyPem: ca.privateKeyPem,
      serverCertPem,
      serverKeyPem: server.privateKeyPem,
      deviceCaCertPem,
      deviceCaKeyPem: deviceCa.privateKeyPem,
    };
  })();
  return cachedPki;
}

/** A device identity issued by the test device CA. */
export async function testIdentity(pki: TestPki): Promise<{ certPem: string; keyPem: string }> {
  const keys = await generateKeyPair();
  const certPem = issueCertificate({
    kind: 'client',
    subject: { CN: 'test device identity' },
    publicKeyPem: keys.publicKeyPem,
    issuerCertPem: pki.deviceCaCertPem,
    issuerKeyPem: pki.deviceCaKeyPem,
    days: 30,
  });
  return { certPem, keyPem: keys.privateKeyPem };
}

export const TEST_TOPIC = 'com.apple.mgmt.External.6a1e1c2e-5b1f-4d7a-9c59-2f1d0e3b4a21';

export class FakeMdmServer {
  readonly requests: RecordedRequest[] = [];
  /** command bodies answered to connects, in order */
  private readonly queue: string[] = [];
  /** status to answer check-ins with */
  checkinStatus = 200;
  signProfile = false;
  private server: https.Server | null = null;
  url = '';

  constructor(readonly pki: TestPki) {}

  enqueue(commandUuid: string, command: CommandPayload): void {
    this.queue.push(encodeCommand(commandUuid, command));
  }

  /** A body answered as is (to send malformed commands). */
  enqueueRaw(body: string): void {
    this.queue.push(body);
  }

  get checkins(): RecordedRequest[] {
    return this.requests.filter((r) => r.path === '/mdm/checkin');
  }

  get connects(): RecordedRequest[] {
    return this.requests.filter((r) => r.path === '/mdm/connect');
  }

  async start(): Promise<void> {
    this.server = https.createServer(
      {
        cert: this.pki.serverCertPem,
        key: this.pki.serverKeyPem,
        requestCert: true,
        rejectUnauthorized: false,
      },
      (req, res) => {
        const chunks: Buffer[] = [];
        req.on('data', (c: Buffer) => chunks.push(c));
        req.on('end', () => {
          void this.answer(req, Buffer.concat(chunks), res);
        });
      },
    );
    await new Promise<void>((resolve) => this.server?.listen(0, '127.0.0.1', resolve));
    this.url = `https://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
  }

  async close(): Promise<void> {
    const server = this.server;
    if (!server) return;
    await new Promise<void>((resolve) => {
      server.close(() => resolve());
      server.closeAllConnections();
    });
  }

  private async answer(req: IncomingMessage, body: Buffer, res: ServerResponse) {
    const url = new URL(req.url ?? '/', this.url);
    const socket = req.socket as TLSSocket;
    const peer = socket.getPeerCertificate?.(false);
    this.requests.push({
      method: req.method ?? '',
      path: url.pathname,
      headers: req.headers,
      body,
      peerCertificate: peer && Buffer.isBuffer(peer.raw) ? peer.raw : null,
    });
    if (url.pathname === '/mdm/enroll') {
      const profile = await this.profile();
      res.writeHead(200, { 'content-type': 'application/x-apple-aspen-config' }).end(profile);
    } else if (url.pathname === '/mdm/checkin') {
      res.writeHead(this.checkinStatus).end();
    } else if (url.pathname === '/mdm/connect') {
      const next = this.queue.shift();
      if (next) res.writeHead(200, { 'content-type': 'application/xml' }).end(next);
      else res.writeHead(200).end();
    } else {
      res.writeHead(404).end();
    }
  }

  private async profile(): Promise<Buffer> {
    const identity = await testIdentity(this.pki);
    const password = 'secret-p12';
    const p12 = makePkcs12({ certPem: identity.certPem, keyPem: identity.keyPem, password });
    const identityUuid = 'A2B4C6D8-0000-4000-8000-000000000001';
    const xml = encodePlist({
      PayloadType: 'Configuration',
      PayloadVersion: 1,
      PayloadIdentifier: 'test.enroll',
      PayloadUUID: 'A2B4C6D8-0000-4000-8000-000000000000',
      PayloadContent: [
        {
          PayloadType: 'com.apple.security.pkcs12',
          PayloadVersion: 1,
          PayloadIdentifier: 'test.enroll.identity',
          PayloadUUID: identityUuid,
          PayloadContent: new Uint8Array(p12),
          Password: password,
        },
        {
          PayloadType: 'com.apple.security.root',
          PayloadVersion: 1,
          PayloadIdentifier: 'test.enroll.ca',
          PayloadUUID: 'A2B4C6D8-0000-4000-8000-000000000002',
          PayloadContent: new Uint8Array(new X509Certificate(this.pki.caCertPem).raw),
        },
        {
          PayloadType: 'com.apple.mdm',
          PayloadVersion: 1,
          PayloadIdentifier: 'test.enroll.mdm',
          PayloadUUID: 'A2B4C6D8-0000-4000-8000-000000000003',
          IdentityCertificateUUID: identityUuid,
          Topic: TEST_TOPIC,
          ServerURL: `${this.url}/mdm/connect`,
          CheckInURL: `${this.url}/mdm/checkin`,
          SignMessage: true,
          AccessRights: 8191,
          CheckOutWhenRemoved: true,
          ServerCapabilities: ['com.apple.mdm.per-user-connections'],
        },
      ],
    });
    const bytes = Buffer.from(xml, 'utf8');
    return this.signProfile
      ? signAttached(bytes, this.pki.serverCertPem, this.pki.serverKeyPem, [this.pki.caCertPem])
      : bytes;
  }
}
