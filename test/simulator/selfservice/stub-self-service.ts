/**
 * A stand-in for the server's Self Service endpoints (api.md): HTTPS that requests a client certificate
 * without requiring one and verifies it against the device CA itself, answering `403` without a valid
 * one. What it lists and answers is set by the test; every request is recorded.
 */
import { X509Certificate } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import https from 'node:https';
import type { AddressInfo } from 'node:net';
import type { TLSSocket } from 'node:tls';
import type { TestPki } from '../helpers/fake-mdm-server.ts';

export interface StubRequest {
  method: string;
  path: string;
  authorized: boolean;
  /** the client certificate's subject CN, when one was presented */
  clientCn: string | null;
}

export interface StubAnswer {
  status: number;
  body: string;
  contentType?: string;
}

export class StubSelfService {
  readonly requests: StubRequest[] = [];
  /** the listing answered to an authorized GET (by client CN, else `listing`) */
  listing: StubAnswer = { status: 200, body: JSON.stringify({ invitations: [] }) };
  listingFor = new Map<string, StubAnswer>();
  /** accept answers by id; unknown ids get 404 */
  accepts = new Map<string, string>();
  url = '';
  private server: https.Server | null = null;

  constructor(private readonly pki: TestPki) {}

  async start(): Promise<void> {
    this.server = https.createServer(
      {
        cert: this.pki.serverCertPem,
        key: this.pki.serverKeyPem,
        ca: [this.pki.deviceCaCertPem],
        requestCert: true,
        rejectUnauthorized: false,
      },
      (req, res) => {
        req.resume();
        req.on('end', () => this.answer(req, res));
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

  private answer(req: IncomingMessage, res: ServerResponse): void {
    const socket = req.socket as TLSSocket;
    const peer = socket.getPeerCertificate(true);
    const clientCn =
      peer !== null && Buffer.isBuffer(peer.raw)
        ? (/CN=([^\n]+)/.exec(new X509Certificate(peer.raw).subject)?.[1] ?? null)
        : null;
    const path = new URL(req.url ?? '/', this.url).pathname;
    this.requests.push({ method: req.method ?? '', path, authorized: socket.authorized, clientCn });
    const send = (a: StubAnswer): void => {
      res.writeHead(a.status, { 'content-type': a.contentType ?? 'application/json' }).end(a.body);
    };
    if (!socket.authorized)
      return send({ status: 403, body: 'no valid device identity', contentType: 'text/plain' });
    if (req.method === 'GET' && path === '/selfservice/v1/invitations') {
      return send((clientCn !== null ? this.listingFor.get(clientCn) : undefined) ?? this.listing);
    }
    const m = /^\/selfservice\/v1\/invitations\/([^/]+)\/accept$/.exec(path);
    if (req.method === 'POST' && m) {
      const url = this.accepts.get(decodeURIComponent(m[1] ?? ''));
      if (url === undefined)
        return send({ status: 404, body: JSON.stringify({ error: { code: 'not_found' } }) });
      return send({ status: 200, body: JSON.stringify({ invitationUrl: url }) });
    }
    send({ status: 404, body: '{}' });
  }
}
