/**
 * Shared setup of the user-model tests: the simulated Apps and Books service over HTTPS (test PKI) with
 * registered users, and iPhones enrolled at the recording MDM endpoint that can be prompted.
 */
import { AppleVppService } from '../../../simulator/apple-vpp/service.ts';
import type { UserSnapshot } from '../../../simulator/apple-vpp/service.ts';
import { randomSpec, seededRng } from '../../../simulator/device/device-spec.ts';
import { httpRequest } from '../../../simulator/device/http-client.ts';
import { newUuid, SimulatedDevice } from '../../../simulator/device/sim-device.ts';
import type { FakeMdmServer } from '../helpers/fake-mdm-server.ts';
import type { TestPki } from '../helpers/fake-mdm-server.ts';
import { waitFor } from '../apple-vpp/helpers.ts';

export { waitFor };

export class VppFixture {
  service!: AppleVppService;
  sToken = '';

  constructor(readonly pki: TestPki) {}

  async start(): Promise<void> {
    this.service = new AppleVppService({
      port: 0,
      tlsCertPem: this.pki.serverCertPem,
      tlsKeyPem: this.pki.serverKeyPem,
      eventDelayMs: 10,
    });
    await this.service.start();
    this.sToken = this.service.mintServiceToken({ orgName: 'Simulated Org', locationName: 'Main' });
  }

  stop(): Promise<void> {
    return this.service.stop();
  }

  /** Registers users at Apple (through the API, as the MDM server does) and answers their invitation URLs. */
  async register(clientUserIds: string[]): Promise<Map<string, string>> {
    const res = await httpRequest({
      method: 'POST',
      url: `${this.service.url}/users/create`,
      headers: { authorization: `Bearer ${this.sToken}`, 'content-type': 'application/json' },
      body: Buffer.from(
        JSON.stringify({
          users: clientUserIds.map((clientUserId) => ({ clientUserId, email: `${clientUserId}@x.test` })),
        }),
      ),
      ca: this.pki.caCertPem,
    });
    if (res.status !== 200) throw new Error(`users/create: ${res.status} ${res.body.toString()}`);
    const urls = await waitFor('invite codes', () => {
      const users = this.service.users(this.sToken).filter((u) => clientUserIds.includes(u.clientUserId));
      return users.length === clientUserIds.length && users.every((u) => u.inviteCode) ? users : null;
    });
    return new Map(urls.map((u) => [u.clientUserId, this.service.invitationUrl(u.inviteCode ?? '')]));
  }

  user(clientUserId: string): UserSnapshot | undefined {
    return this.service.users(this.sToken).find((u) => u.clientUserId === clientUserId);
  }
}

let seed = 100;

/** An iPhone enrolled at the fake MDM endpoint, signed in to the store. */
export async function enrolledIphone(mdm: FakeMdmServer): Promise<SimulatedDevice> {
  const device = await SimulatedDevice.create(
    randomSpec('ios', seededRng(seed++), { storeAccountShare: 1 }),
    {
      stateDir: null,
      ca: mdm.pki.caCertPem,
    },
  );
  await device.enroll(`${mdm.url}/mdm/enroll?token=t`);
  return device;
}

/** Queues an InviteToProgram at the fake MDM endpoint and lets the device connect (as after a push). */
export async function prompt(
  mdm: FakeMdmServer,
  device: SimulatedDevice,
  invitationUrl: string,
): Promise<string> {
  const uuid = newUuid();
  mdm.enqueue(uuid, {
    RequestType: 'InviteToProgram',
    ProgramID: 'com.apple.cloudvpp',
    InvitationURL: invitationUrl,
  });
  await device.connect('device');
  return uuid;
}
