import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { ensureDevPki, type DevPki } from '../../../certs/dev-pki.ts';
import type { Database } from '../../../server/storage/database.ts';
import { modelsOf } from '../../../server/storage/models.ts';
import { ApnsGateway, type ApnsPush } from '../../../simulator/apns/gateway.ts';
import { randomSpec, seededRng, type Rng } from '../../../simulator/device/device-spec.ts';
import { SimulatedDevice } from '../../../simulator/device/sim-device.ts';
import type { TestServer } from '../../helpers/test-server.ts';

/** A data dir with the development PKI made in advance, so that the gateway and the server share it. */
export interface PushFixture {
  dataDir: string;
  pki: DevPki;
  gateway: ApnsGateway;
  gatewayUrl: string;
  /** every push the gateway accepted, per token */
  accepted: Map<string, ApnsPush[]>;
  cleanup(): Promise<void>;
}

export async function pushFixture(): Promise<PushFixture> {
  const dataDir = await mkdtemp(path.join(os.tmpdir(), 'mdm-push-'));
  const pki = await ensureDevPki(path.join(dataDir, 'certs'), { hostnames: ['127.0.0.1'] });
  const gateway = new ApnsGateway({
    port: 0,
    tlsCertPem: pki.simulatorCertPem,
    tlsKeyPem: pki.simulatorKeyPem,
    clientCaPems: [pki.caCertPem],
  });
  const { url } = await gateway.start();
  const accepted = new Map<string, ApnsPush[]>();
  gateway.on('accepted', (push) => {
    const list = accepted.get(push.token) ?? [];
    list.push({ token: push.token, mdm: push.mdm, topic: push.topic, id: push.id });
    accepted.set(push.token, list);
  });
  return {
    dataDir,
    pki,
    gateway,
    gatewayUrl: url,
    accepted,
    async cleanup() {
      await gateway.stop();
      await rm(dataDir, { recursive: true, force: true });
    },
  };
}

export { waitFor } from '../../helpers/wait.ts';

/**
 * Simulated devices enrolled in the test server that connect when the gateway delivers a push to them
 * (no polling): the device's own APNs listener.
 */
export async function enrollDevices(
  ts: TestServer,
  count: number,
  rng: Rng = seededRng(7),
): Promise<SimulatedDevice[]> {
  const created = await ts.api('POST', '/enrollment-tokens', {});
  const { enrollUrl } = created.json<{ enrollUrl: string }>();
  const specs = Array.from({ length: count }, () => randomSpec('ios', rng));
  const devices: SimulatedDevice[] = [];
  // a few at a time: the server makes an RSA key per profile on the thread pool
  for (let i = 0; i < specs.length; i += 8) {
    const group = await Promise.all(
      specs.slice(i, i + 8).map(async (spec) => {
        const device = await SimulatedDevice.create(spec, { stateDir: null, ca: ts.ca });
        await device.enroll(enrollUrl);
        return device;
      }),
    );
    devices.push(...group);
  }
  return devices;
}

/**
 * Enrolled device channels written straight into the database (a device row and an enabled enrollment
 * with a random token each), for counts that enrolling over HTTP would make slow.
 */
export async function insertEnrollments(
  db: Database,
  count: number,
  topic: string,
): Promise<{ id: string; token: string }[]> {
  const m = modelsOf(db.sequelize);
  const now = new Date();
  const prefix = randomBytes(4).toString('hex').toUpperCase();
  const rows = Array.from({ length: count }, (_, i) => ({
    id: `BULK-${prefix}-${String(i).padStart(6, '0')}`,
    token: randomBytes(32).toString('hex'),
  }));
  for (let i = 0; i < rows.length; i += 500) {
    const part = rows.slice(i, i + 500);
    await db.write(async (t) => {
      await m.Device.bulkCreate(
        part.map((r) => ({
          udid: r.id,
          platform: 'ios',
          osVersion: '17.5',
          buildVersion: '21F79',
          model: 'iPhone15,2',
          productName: 'iPhone15,2',
          serialNumber: null,
          deviceName: null,
          userEnrollment: false,
          enrolled: true,
          enrolledAt: now,
          checkedOutAt: null,
          lastSeenAt: null,
          userId: null,
          certFingerprint: null,
          createdAt: now,
          updatedAt: now,
        })),
        { transaction: t },
      );
      await m.Enrollment.bulkCreate(
        part.map((r) => ({
          id: r.id,
          udid: r.id,
          channel: 'device',
          appleUserId: null,
          userShortName: null,
          userLongName: null,
          topic,
          pushToken: r.token,
          pushMagic: `magic-${r.id}`,
          unlockToken: null,
          enabled: true,
          pushTokenDead: false,
          tokenUpdatedAt: now,
          createdAt: now,
          updatedAt: now,
        })),
        { transaction: t },
      );
    });
  }
  return rows;
}
