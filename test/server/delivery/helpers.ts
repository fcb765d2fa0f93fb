/**
 * The world a device-delivery test runs in: the real server, the simulator's APNs gateway and Apps and
 * Books service (all on one development PKI made in advance in the data dir), and simulated devices
 * that enroll over HTTPS and connect when a push reaches them.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { ensureDevPki, type DevPki } from '../../../certs/dev-pki.ts';
import { ApnsGateway, type ApnsPush } from '../../../simulator/apns/gateway.ts';
import { AppleVppService } from '../../../simulator/apple-vpp/service.ts';
import type { DeviceSpec } from '../../../simulator/device/device-spec.ts';
import { SimulatedDevice } from '../../../simulator/device/sim-device.ts';
import { SelfServiceClient } from '../../../simulator/selfservice/self-service-client.ts';
import { startTestServer, type TestServer } from '../../helpers/test-server.ts';

export interface UsageDeviceJson {
  udid: string;
  enrollmentId: string;
  commandStatus: string | null;
  commandUuid?: string | null;
}

export interface UsageItemJson {
  id: string;
  userId: string;
  username: string;
  status: string;
  reason: string | null;
  lastAction: string | null;
  lastActionAt: string | null;
  sentAt: string | null;
  devices: UsageDeviceJson[];
  invitationUrl: string | null;
}

export interface DeliveryFixture {
  dataDir: string;
  pki: DevPki;
  gateway: ApnsGateway;
  service: AppleVppService;
  ts: TestServer;
  enrollUrl: string;
  /** every push the gateway accepted, per token */
  accepted: Map<string, ApnsPush[]>;
  /** a location (a token minted at the simulated service), its id */
  addLocation(): Promise<string>;
  addUser(username: string, extra?: Record<string, unknown>): Promise<string>;
  /** a new device, enrolled (not connected) */
  enroll(spec: DeviceSpec): Promise<SimulatedDevice>;
  /** from now on, each push to one of the device's channels makes that channel connect */
  online(device: SimulatedDevice): void;
  assign(device: SimulatedDevice, userId: string | null): Promise<void>;
  selfService(device: SimulatedDevice): SelfServiceClient;
  createInvitation(body: Record<string, unknown>): Promise<string>;
  usage(invitationId: string): Promise<UsageItemJson[]>;
  commandsOf(
    device: SimulatedDevice,
  ): Promise<{ commandUuid: string; requestType: string; status: string; enrollmentId: string }[]>;
  cleanup(): Promise<void>;
}

let counter = 0;

export async function deliveryFixture(env: Record<string, string> = {}): Promise<DeliveryFixture> {
  const dataDir = await mkdtemp(path.join(os.tmpdir(), 'mdm-delivery-'));
  const pki = await ensureDevPki(path.join(dataDir, 'certs'), { hostnames: ['127.0.0.1'] });
  const gateway = new ApnsGateway({
    port: 0,
    tlsCertPem: pki.simulatorCertPem,
    tlsKeyPem: pki.simulatorKeyPem,
    clientCaPems: [pki.caCertPem],
  });
  const { url: gatewayUrl } = await gateway.start();
  const accepted = new Map<string, ApnsPush[]>();
  gateway.on('accepted', (push) => {
    const list = accepted.get(push.token) ?? [];
    list.push({ token: push.token, mdm: push.mdm, topic: push.topic, id: push.id });
    accepted.set(push.token, list);
  });
  const service = new AppleVppService({
    port: 0,
    tlsCertPem: pki.simulatorCertPem,
    tlsKeyPem: pki.simulatorKeyPem,
    notificationCaPems: [pki.caCertPem],
    eventDelayMs: 50,
    notificationRetry: { maxAttempts: 5, initialDelayMs: 100, maxDelayMs: 500 },
  });
  const { url: vppUrl } = await service.start();
  // `MDM_TEST_DELIVERY_DATABASE_URL` runs these tests on another (empty) database than SQLite
  const databaseUrl = process.env['MDM_TEST_DELIVERY_DATABASE_URL'];
  const ts = await startTestServer({
    MDM_DATA_DIR: dataDir,
    MDM_APNS_URL: gatewayUrl,
    MDM_VPP_URL: vppUrl,
    ...(databaseUrl ? { MDM_DATABASE_URL: databaseUrl } : {}),
    ...env,
  });
  const created = await ts.api('POST', '/enrollment-tokens', {});
  if (created.status !== 201) throw new Error(`POST /enrollment-tokens: ${created.status} ${created.text}`);
  const enrollUrl = created.json<{ enrollUrl: string }>().enrollUrl;
  const devices: SimulatedDevice[] = [];
  const unsubscribe: (() => void)[] = [];
  const clients: SelfServiceClient[] = [];

  const fixture: DeliveryFixture = {
    dataDir,
    pki,
    gateway,
    service,
    ts,
    enrollUrl,
    accepted,
    async addLocation() {
      counter += 1;
      const sToken = service.mintServiceToken({
        orgName: `Org ${counter}`,
        locationName: `Location ${counter}`,
      });
      const res = await ts.api('POST', '/locations', { name: `location ${counter}`, serviceToken: sToken });
      if (res.status !== 201) throw new Error(`POST /locations: ${res.status} ${res.text}`);
      return res.json<{ id: string }>().id;
    },
    async addUser(username, extra = {}) {
      const res = await ts.api('POST', '/users', { username, ...extra });
      if (res.status !== 201) throw new Error(`POST /users: ${res.status} ${res.text}`);
      return res.json<{ id: string }>().id;
    },
    async enroll(spec) {
      const device = await SimulatedDevice.create(spec, { stateDir: null, ca: ts.ca });
      devices.push(device);
      await device.enroll(enrollUrl);
      return device;
    },
    online(device) {
      for (const channel of device.channels) {
        unsubscribe.push(
          gateway.subscribe(device.pushInfo(channel).token, () => {
            device.connect(channel).catch(() => undefined);
          }),
        );
      }
    },
    async assign(device, userId) {
      const res = await ts.api('PUT', `/devices/${encodeURIComponent(device.enrollmentId())}/user`, {
        userId,
      });
      if (res.status !== 200) throw new Error(`PUT /devices/{udid}/user: ${res.status} ${res.text}`);
    },
    selfService(device) {
      const client = SelfServiceClient.forDevice(device, { ca: ts.ca });
      clients.push(client);
      return client;
    },
    async createInvitation(body) {
      const res = await ts.api('POST', '/vpp-invitations', body);
      if (res.status !== 201) throw new Error(`POST /vpp-invitations: ${res.status} ${res.text}`);
      return res.json<{ id: string }>().id;
    },
    async usage(invitationId) {
      const res = await ts.api('GET', `/vpp-invitations/${invitationId}/usage?limit=1000`);
      if (res.status !== 200) throw new Error(`GET usage: ${res.status} ${res.text}`);
      return res.json<{ items: UsageItemJson[] }>().items;
    },
    async commandsOf(device) {
      const res = await ts.api(
        'GET',
        `/devices/${encodeURIComponent(device.enrollmentId())}/commands?limit=1000`,
      );
      if (res.status !== 200) throw new Error(`GET commands: ${res.status} ${res.text}`);
      return res.json<{
        items: { commandUuid: string; requestType: string; status: string; enrollmentId: string }[];
      }>().items;
    },
    async cleanup() {
      for (const u of unsubscribe) u();
      await Promise.all(clients.map((c) => c.stop()));
      for (const d of devices) d.close();
      await ts.stop();
      await service.stop();
      await gateway.stop();
      await rm(dataDir, { recursive: true, force: true });
    },
  };
  return fixture;
}

export { waitFor } from '../../helpers/wait.ts';
