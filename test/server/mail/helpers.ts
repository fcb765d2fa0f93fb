import { mkdtemp, rm } from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { ensureDevPki } from '../../../certs/dev-pki.ts';
import { AppleVppService } from '../../../simulator/apple-vpp/service.ts';
import { startSmtpCapture, type CapturedMail, type SmtpCapture } from '../../helpers/smtp-capture.ts';
import { startTestServer, type TestServer } from '../../helpers/test-server.ts';
import { createInvitation, usageOf, type InvitationJson, type UsageJson } from '../invitations/helpers.ts';
import { waitFor } from '../vpp/helpers.ts';

/**
 * The server with everything real around it for email invitations: a real SMTP server (captured
 * messages), the simulated Apps and Books service over HTTPS, and optionally more environment (LDAP).
 * The server keeps its port and data dir across `restart()`, so links and Apple's notification URL
 * stay valid.
 */
export interface EmailFixture {
  smtp: SmtpCapture;
  service: AppleVppService;
  ts: TestServer;
  dataDir: string;
  /** a location on a fresh simulated service token */
  addLocation(): Promise<string>;
  addUser(username: string, extra?: Record<string, unknown>): Promise<string>;
  /** creates an `email` invitation (defaults: every user of `userIds`, sender IT) */
  invite(userIds: string[], extra?: Record<string, unknown>): Promise<InvitationJson>;
  usage(invitationId: string): Promise<UsageJson[]>;
  /** waits until every listed user's usage has one of the statuses */
  waitForStatus(
    invitationId: string,
    userIds: string[],
    statuses: string[],
    timeoutMs?: number,
  ): Promise<UsageJson[]>;
  /** stops the SMTP server ("down") and starts it again on the same port ("up") */
  smtpDown(): Promise<void>;
  smtpUp(): Promise<void>;
  stopServer(): Promise<void>;
  startServer(): Promise<void>;
  cleanup(): Promise<void>;
}

export const MAIL_FROM = 'bounces@mdm.example.test';

async function freePort(): Promise<number> {
  const srv = net.createServer();
  await new Promise<void>((resolve, reject) => {
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', resolve);
  });
  const port = (srv.address() as net.AddressInfo).port;
  await new Promise<void>((resolve) => srv.close(() => resolve()));
  return port;
}

let counter = 0;

export async function emailFixture(opts: { env?: Record<string, string> } = {}): Promise<EmailFixture> {
  const dataDir = await mkdtemp(path.join(os.tmpdir(), 'mdm-mail-'));
  const pki = await ensureDevPki(path.join(dataDir, 'certs'), { hostnames: ['127.0.0.1'] });
  const service = new AppleVppService({
    port: 0,
    tlsCertPem: pki.simulatorCertPem,
    tlsKeyPem: pki.simulatorKeyPem,
    notificationCaPems: [pki.caCertPem],
    eventDelayMs: 50,
    notificationRetry: { maxAttempts: 3, initialDelayMs: 100, maxDelayMs: 500 },
  });
  const { url: vppUrl } = await service.start();
  let smtp = await startSmtpCapture();
  const smtpPort = smtp.port;
  const port = await freePort();
  const env = {
    MDM_DATA_DIR: dataDir,
    MDM_PORT: String(port),
    MDM_PUBLIC_URL: `https://127.0.0.1:${port}`,
    MDM_VPP_URL: vppUrl,
    MDM_SMTP_URL: smtp.url,
    MDM_MAIL_FROM: MAIL_FROM,
    MDM_MAIL_RATE: '50',
    ...opts.env,
  };
  let ts: TestServer | null = await startTestServer(env);
  const server = () => {
    if (!ts) throw new Error('the server is stopped');
    return ts;
  };
  const fixture: EmailFixture = {
    get smtp() {
      return smtp;
    },
    service,
    get ts() {
      return server();
    },
    dataDir,
    async addLocation() {
      counter += 1;
      const sToken = service.mintServiceToken({
        orgName: `Example Org ${counter}`,
        locationName: `Loc ${counter}`,
      });
      const res = await server().api('POST', '/locations', {
        name: `location ${counter}`,
        serviceToken: sToken,
      });
      if (res.status !== 201) throw new Error(`POST /locations: ${res.status} ${res.text}`);
      return res.json<{ id: string }>().id;
    },
    async addUser(username, extra = {}) {
      const res = await server().api('POST', '/users', { username, ...extra });
      if (res.status !== 201) throw new Error(`POST /users: ${res.status} ${res.text}`);
      return res.json<{ id: string }>().id;
    },
    async invite(userIds, extra = {}) {
      const locationId =
        typeof extra.locationId === 'string' ? extra.locationId : await fixture.addLocation();
      return createInvitation(server(), {
        name: 'Staff apps',
        locationId,
        distributionMethod: 'email',
        email: {
          senderName: 'IT Department',
          senderAddress: 'it@example.test',
          subject: 'Register for apps and books',
          message: 'Open %@ to register.',
        },
        scope: { allUsers: false, userIds, groupIds: [], exclusions: { userIds: [], groupIds: [] } },
        ...extra,
      });
    },
    usage: (invitationId) => usageOf(server(), invitationId),
    async waitForStatus(invitationId, userIds, statuses, timeoutMs = 20_000) {
      let last: UsageJson[] = [];
      try {
        return await waitFor(
          `usage ${statuses.join('|')}`,
          async () => {
            last = await usageOf(server(), invitationId);
            const all = userIds.every((u) => last.some((i) => i.userId === u && statuses.includes(i.status)));
            return all ? last : undefined;
          },
          timeoutMs,
        );
      } catch (err) {
        throw new Error(`${(err as Error).message}; usage: ${JSON.stringify(last, null, 1)}`, { cause: err });
      }
    },
    async smtpDown() {
      await smtp.stop();
    },
    async smtpUp() {
      // The same port and the same list of messages: the server is back.
      smtp = await startSmtpCapture({ port: smtpPort, messages: smtp.messages });
    },
    async stopServer() {
      const s = ts;
      ts = null;
      await s?.stop();
    },
    async startServer() {
      if (ts) return;
      ts = await startTestServer(env);
    },
    async cleanup() {
      await fixture.stopServer();
      await smtp.stop();
      await service.stop();
      await rm(dataDir, { recursive: true, force: true });
    },
  };
  return fixture;
}

/** The registration link of a captured message (from its plain-text part). */
export function linkOf(mail: CapturedMail): string {
  const m = /https:\/\/[^\s]+\/register\/[A-Za-z0-9_-]+/.exec(mail.text ?? '');
  if (!m) throw new Error(`no registration link in: ${mail.text}`);
  return m[0];
}

export function messagesTo(smtp: SmtpCapture, address: string): CapturedMail[] {
  return smtp.messages.filter((m) => m.recipients.includes(address));
}
