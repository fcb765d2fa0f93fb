import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { ensureDevPki, type DevPki } from '../../../certs/dev-pki.ts';
import { AppleVppService, type AppleVppServiceOptions } from '../../../simulator/apple-vpp/service.ts';
import { startTestServer, type HttpAnswer, type TestServer } from '../../helpers/test-server.ts';

/**
 * The simulated Apps and Books service over HTTPS (certificate from the server's development PKI, made
 * in advance in the data dir) trusting the server's CA for its notifications, and a test server that
 * talks to it. The server's public URL is `https://127.0.0.1:<port>`, so notifications reach it.
 */
export interface VppFixture {
  dataDir: string;
  pki: DevPki;
  service: AppleVppService;
  ts: TestServer;
  /** mints a token and adds a location through the API; returns its id and the token */
  addLocation(opts?: {
    orgName?: string;
    name?: string;
    siteId?: string;
  }): Promise<{ id: string; sToken: string }>;
  /** creates a user through the API */
  addUser(username: string, extra?: Record<string, unknown>): Promise<string>;
  cleanup(): Promise<void>;
}

let counter = 0;

export async function vppFixture(
  opts: { env?: Record<string, string>; service?: Partial<AppleVppServiceOptions> } = {},
): Promise<VppFixture> {
  const dataDir = await mkdtemp(path.join(os.tmpdir(), 'mdm-vpp-'));
  const pki = await ensureDevPki(path.join(dataDir, 'certs'), { hostnames: ['127.0.0.1'] });
  const service = new AppleVppService({
    port: 0,
    tlsCertPem: pki.simulatorCertPem,
    tlsKeyPem: pki.simulatorKeyPem,
    notificationCaPems: [pki.caCertPem],
    eventDelayMs: 100,
    notificationRetry: { maxAttempts: 3, initialDelayMs: 100, maxDelayMs: 500 },
    ...opts.service,
  });
  const { url } = await service.start();
  let ts: TestServer;
  try {
    ts = await startTestServer({ MDM_DATA_DIR: dataDir, MDM_VPP_URL: url, ...opts.env });
  } catch (err) {
    await service.stop();
    await rm(dataDir, { recursive: true, force: true });
    throw err;
  }
  const fixture: VppFixture = {
    dataDir,
    pki,
    service,
    ts,
    async addLocation(o = {}) {
      counter += 1;
      const sToken = service.mintServiceToken({
        orgName: o.orgName ?? `Org ${counter}`,
        locationName: `Loc ${counter}`,
      });
      const res = await ts.api('POST', '/locations', {
        name: o.name ?? `location ${counter}`,
        serviceToken: sToken,
        ...(o.siteId ? { siteId: o.siteId } : {}),
      });
      if (res.status !== 201) throw new Error(`POST /locations: ${res.status} ${res.text}`);
      return { id: res.json<{ id: string }>().id, sToken };
    },
    async addUser(username, extra = {}) {
      const res = await ts.api('POST', '/users', { username, ...extra });
      if (res.status !== 201) throw new Error(`POST /users: ${res.status} ${res.text}`);
      return res.json<{ id: string }>().id;
    },
    async cleanup() {
      await ts.stop();
      await service.stop();
      await rm(dataDir, { recursive: true, force: true });
    },
  };
  return fixture;
}

export { waitFor } from '../../helpers/wait.ts';

export interface RegistrationJson {
  locationId: string;
  status: 'pending' | 'registered' | 'associated' | 'retired' | 'failed';
  clientUserId: string;
  managed: boolean;
  inviteCode?: string;
  invitationUrl?: string;
  idHash?: string;
  registeredAt?: string;
  associatedAt?: string;
  error?: { errorNumber: number | null; message: string };
}

export interface ErrorBody {
  error: { code: string; message: string; details?: Record<string, unknown> };
}

export async function registrationsOf(ts: TestServer, userId: string): Promise<RegistrationJson[]> {
  const res = await ts.api('GET', `/users/${userId}/registrations`);
  if (res.status !== 200) throw new Error(`GET registrations: ${res.status} ${res.text}`);
  return res.json<{ items: RegistrationJson[] }>().items;
}

export async function registrationAt(
  ts: TestServer,
  userId: string,
  locationId: string,
): Promise<RegistrationJson | undefined> {
  return (await registrationsOf(ts, userId)).find((r) => r.locationId === locationId);
}

export const errorCode = (res: HttpAnswer) => res.json<ErrorBody>().error.code;
