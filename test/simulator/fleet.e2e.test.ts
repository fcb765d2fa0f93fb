/**
 * The real server, started in-process on an ephemeral port, and simulated devices talking to it over
 * HTTPS exactly as devices do.
 */
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { expect } from 'chai';
import { z } from 'zod';
import { loadConfig } from '../../server/config.ts';
import { createLogger } from '../../server/log.ts';
import { startServer } from '../../server/server.ts';
import type { RunningServer } from '../../server/server.ts';
import { runSimulator } from '../../simulator/cli.ts';
import { randomSpec, seededRng } from '../../simulator/device/device-spec.ts';
import { httpRequest } from '../../simulator/device/http-client.ts';
import type { SimulatedDevice } from '../../simulator/device/sim-device.ts';
import { Fleet } from '../../simulator/fleet.ts';

const INVITATION_URL =
  'https://buy.itunes.apple.com/WebObjects/MZFinance.woa/wa/associateVPPUserWithITSAccount?cc=us&inviteCode=e2e&mt=8';

const deviceAnswer = z.object({
  udid: z.string(),
  platform: z.enum(['macos', 'ios', 'ipados']),
  enrolled: z.boolean(),
  channels: z.array(z.object({ enrollmentId: z.string(), userId: z.string().optional() }).loose()),
});

const commandsAnswer = z.object({
  items: z.array(
    z
      .object({
        commandUuid: z.string(),
        requestType: z.string(),
        enrollmentId: z.string(),
        status: z.string(),
        result: z.record(z.string(), z.unknown()).optional(),
      })
      .loose(),
  ),
});

class Buffered {
  text = '';
  isTTY = false;
  write(chunk: string): boolean {
    this.text += chunk;
    return true;
  }
}

describe('simulated fleet against the real server (e2e)', function () {
  this.timeout(180_000);
  let tmp: string;
  let server: RunningServer;
  let ca: string;
  let fleet: Fleet;

  async function api(
    method: 'GET' | 'POST',
    p: string,
    body?: unknown,
  ): Promise<{ status: number; json: unknown }> {
    const res = await httpRequest({
      method,
      url: `${server.url}/api/v1${p}`,
      headers: {
        authorization: `Bearer ${server.adminToken}`,
        ...(body !== undefined ? { 'content-type': 'application/json' } : {}),
      },
      ...(body !== undefined ? { body: Buffer.from(JSON.stringify(body)) } : {}),
      ca,
    });
    const text = res.body.toString('utf8');
    return { status: res.status, json: text ? (JSON.parse(text) as unknown) : null };
  }

  async function queue(udid: string, command: Record<string, unknown>): Promise<string> {
    const { status, json } = await api('POST', `/devices/${encodeURIComponent(udid)}/commands`, command);
    expect(status, JSON.stringify(json)).to.equal(201);
    return z.object({ commandUuid: z.string() }).parse(json).commandUuid;
  }

  async function command(udid: string, uuid: string) {
    const { status, json } = await api('GET', `/devices/${encodeURIComponent(udid)}/commands`);
    expect(status).to.equal(200);
    const found = commandsAnswer.parse(json).items.find((c) => c.commandUuid === uuid);
    if (!found) throw new Error(`command ${uuid} not listed for ${udid}`);
    return found;
  }

  before(async () => {
    tmp = await mkdtemp(path.join(os.tmpdir(), 'sim-e2e-'));
    const config = loadConfig(
      {
        MDM_DATA_DIR: path.join(tmp, 'data'),
        MDM_HOST: '127.0.0.1',
        MDM_PORT: '0',
        MDM_PUBLIC_URL: 'https://127.0.0.1:0',
        MDM_LOG_LEVEL: 'silent',
      },
      tmp,
    );
    server = await startServer(config, createLogger('silent'));
    ca = await readFile(server.caCertPath, 'utf8');
    fleet = new Fleet({ stateDir: path.join(tmp, 'sim'), ca, concurrency: 5 });
  });

  after(async () => {
    fleet?.close();
    await server?.close();
    await rm(tmp, { recursive: true, force: true });
  });

  let iphone: SimulatedDevice;
  let inSetup: SimulatedDevice;
  let ipad: SimulatedDevice;
  let macWithUser: SimulatedDevice;
  let mac: SimulatedDevice;

  it('enrolls 3 iOS and 2 macOS devices (one Mac with its user channel)', async () => {
    const rng = seededRng(42);
    iphone = await fleet.add(randomSpec('ios', rng, { storeAccountShare: 1 }));
    inSetup = await fleet.add(randomSpec('ios', rng, { setupAssistant: true }));
    ipad = await fleet.add(randomSpec('ipados', rng));
    macWithUser = await fleet.add(randomSpec('macos', rng));
    mac = await fleet.add(randomSpec('macos', rng, { consoleUser: false }));

    const { status, json } = await api('POST', '/enrollment-tokens', {});
    expect(status, JSON.stringify(json)).to.equal(201);
    const { enrollUrl } = z.object({ enrollUrl: z.string() }).parse(json);
    const result = await fleet.enrollAll(enrollUrl);
    expect(fleet.failures, JSON.stringify(fleet.failures)).to.deep.equal([]);
    expect(result).to.deep.include({ attempted: 5, ok: 5, failed: 0 });

    for (const d of fleet.devices) {
      const got = await api('GET', `/devices/${encodeURIComponent(d.udid)}`);
      expect(got.status).to.equal(200);
      const device = deviceAnswer.parse(got.json);
      expect(device.enrolled).to.equal(true);
      expect(device.platform).to.equal(d.spec.platform);
      const ids = device.channels.map((c) => c.enrollmentId).sort();
      expect(ids).to.deep.equal(d.channels.map((c) => d.enrollmentId(c)).sort());
    }
    expect(macWithUser.channels).to.deep.equal(['device', 'user']);
    expect(mac.channels).to.deep.equal(['device']);
    const macUser = deviceAnswer.parse((await api('GET', `/devices/${macWithUser.udid}`)).json).channels;
    expect(macUser.find((c) => c.enrollmentId === macWithUser.enrollmentId('user'))?.userId).to.equal(
      macWithUser.spec.consoleUser?.userId,
    );
  });

  it('answers a DeviceInformation queued through the admin API', async () => {
    const uuid = await queue(iphone.udid, {
      requestType: 'DeviceInformation',
      Queries: ['UDID', 'OSVersion', 'SerialNumber', 'iTunesStoreAccountIsActive', 'iTunesStoreAccountHash'],
    });
    expect((await command(iphone.udid, uuid)).status).to.equal('queued');
    const r = await iphone.connect();
    expect(r.commands).to.deep.equal([
      { commandUuid: uuid, requestType: 'DeviceInformation', status: 'Acknowledged' },
    ]);
    const c = await command(iphone.udid, uuid);
    expect(c.status).to.equal('acknowledged');
    expect(c.result?.['QueryResponses']).to.deep.equal({
      UDID: iphone.udid,
      OSVersion: iphone.spec.osVersion,
      SerialNumber: iphone.spec.serialNumber,
      iTunesStoreAccountIsActive: true,
      iTunesStoreAccountHash: iphone.spec.storeAccount.appleIdHash,
    });
  });

  it('gets NotNow for InviteToProgram in Setup Assistant, then Acknowledged once setup is done', async () => {
    const uuid = await queue(inSetup.udid, {
      requestType: 'InviteToProgram',
      ProgramID: 'com.apple.cloudvpp',
      InvitationURL: INVITATION_URL,
    });
    const first = await inSetup.connect();
    expect(first.commands).to.deep.equal([
      { commandUuid: uuid, requestType: 'InviteToProgram', status: 'NotNow' },
    ]);
    expect((await command(inSetup.udid, uuid)).status).to.equal('not_now');

    expect(inSetup.wantsToPoll()).to.equal(true);
    await inSetup.setSetupAssistant(false);
    const polls = await inSetup.pollIfPending();
    expect(polls).to.have.length(1);
    const second = polls[0];
    expect(inSetup.wantsToPoll()).to.equal(false);
    expect(second?.commands).to.deep.equal([
      { commandUuid: uuid, requestType: 'InviteToProgram', status: 'Acknowledged' },
    ]);
    const c = await command(inSetup.udid, uuid);
    expect(c.status).to.equal('acknowledged');
    expect(c.result?.['InvitationResult']).to.equal('Acknowledged');
    expect(inSetup.invitations.map((i) => [i.commandUuid, i.status, i.invitationUrl])).to.deep.equal([
      [uuid, 'Acknowledged', INVITATION_URL],
    ]);
  });

  it('takes InviteToProgram on the Mac user channel and answers unknown commands with an Error', async () => {
    const invite = await queue(macWithUser.udid, {
      requestType: 'InviteToProgram',
      enrollmentId: macWithUser.enrollmentId('user'),
      ProgramID: 'com.apple.cloudvpp',
      InvitationURL: INVITATION_URL,
    });
    const unknown = await queue(ipad.udid, { requestType: 'ProfileList' });
    const results = await fleet.connectAll();
    expect(results).to.deep.include({ attempted: 6, ok: 6, failed: 0 });
    expect((await command(macWithUser.udid, invite)).status).to.equal('acknowledged');
    expect(macWithUser.invitations[0]?.channel).to.equal('user');
    const err = await command(ipad.udid, unknown);
    expect(err.status).to.equal('error');
    expect(err.result?.['ErrorChain']).to.deep.equal([
      {
        ErrorCode: 12021,
        ErrorDomain: 'MCMDMErrorDomain',
        LocalizedDescription: 'Unknown command “ProfileList”.',
        USEnglishDescription: 'Unknown command “ProfileList”.',
      },
    ]);
  });

  it('reloads the fleet from its state directory without re-enrolling', async () => {
    const again = new Fleet({ stateDir: path.join(tmp, 'sim'), ca, concurrency: 5 });
    try {
      const loaded = await again.load();
      expect(loaded.map((d) => d.udid).sort()).to.deep.equal(fleet.devices.map((d) => d.udid).sort());
      expect(loaded.every((d) => d.enrolled)).to.equal(true);
      const uuid = await queue(mac.udid, { requestType: 'DeviceInformation', Queries: ['Model'] });
      const r = await again.connectAll();
      expect(r.failed, JSON.stringify(again.failures)).to.equal(0);
      expect(again.enrollStats.ok).to.equal(0);
      expect((await command(mac.udid, uuid)).result?.['QueryResponses']).to.deep.equal({
        Model: mac.spec.model,
      });
    } finally {
      again.close();
    }
  });

  it('enrolls a User Enrollment iPhone, a Shared iPad and a device that authenticates by TLS client certificate only', async () => {
    const { json } = await api('POST', '/enrollment-tokens', {});
    const { enrollUrl } = z.object({ enrollUrl: z.string() }).parse(json);
    const rng = seededRng(99);
    const tlsFleet = new Fleet({ stateDir: null, ca, signature: 'none', tlsClientCertificate: true });
    try {
      const ue = await fleet.add(randomSpec('ios', rng, { userEnrollment: true }));
      const shared = await fleet.add(randomSpec('ipados', rng, { sharedIpad: true }));
      const tlsOnly = await tlsFleet.add(randomSpec('macos', rng));
      await fleet.enrollAll(enrollUrl, [ue, shared]);
      await tlsFleet.enrollAll(enrollUrl);
      expect([...fleet.failures, ...tlsFleet.failures]).to.deep.equal([]);

      const ueDevice = deviceAnswer.parse((await api('GET', `/devices/${ue.enrollmentId()}`)).json);
      expect(ueDevice.enrolled).to.equal(true);
      const uuid = await queue(ue.enrollmentId(), {
        requestType: 'DeviceInformation',
        Queries: ['UDID', 'OSVersion'],
      });
      await ue.connect();
      expect((await command(ue.enrollmentId(), uuid)).result?.['QueryResponses']).to.deep.equal({
        OSVersion: ue.spec.osVersion,
      });

      const sharedDevice = deviceAnswer.parse((await api('GET', `/devices/${shared.udid}`)).json);
      expect(sharedDevice.channels.map((c) => c.enrollmentId).sort()).to.deep.equal(
        [shared.enrollmentId('device'), shared.enrollmentId('user')].sort(),
      );
      const sharedInvite = await queue(shared.udid, {
        requestType: 'InviteToProgram',
        enrollmentId: shared.enrollmentId('user'),
        ProgramID: 'com.apple.cloudvpp',
        InvitationURL: INVITATION_URL,
      });
      await shared.connect('user');
      expect((await command(shared.udid, sharedInvite)).status).to.equal('acknowledged');

      const tlsUuid = await queue(tlsOnly.udid, {
        requestType: 'InviteToProgram',
        enrollmentId: tlsOnly.enrollmentId('user'),
        ProgramID: 'com.apple.cloudvpp',
        InvitationURL: INVITATION_URL,
      });
      const r = await tlsFleet.connectAll();
      expect(r).to.deep.include({ attempted: 2, ok: 2, failed: 0 });
      expect((await command(tlsOnly.udid, tlsUuid)).status).to.equal('acknowledged');
    } finally {
      tlsFleet.close();
    }
  });

  it('checks a device out', async () => {
    await ipad.checkOut();
    const device = deviceAnswer.parse((await api('GET', `/devices/${ipad.udid}`)).json);
    expect(device.enrolled).to.equal(false);
  });

  it('runs the simulate command in-process: creates, enrolls and connects devices', async () => {
    const stdout = new Buffered();
    const stderr = new Buffered();
    const result = await runSimulator(
      [
        '--devices',
        '6',
        '--macos-share',
        '0.5',
        '--server',
        server.url,
        '--data-dir',
        path.join(tmp, 'data'),
        '--state-dir',
        path.join(tmp, 'cli-sim'),
        '--concurrency',
        '3',
        '--signature',
        'sha1',
        '--seed',
        '7',
        '--connect',
        '--apns-port',
        '0',
        '--vpp-port',
        '0',
        '--exit',
      ],
      { stdout, stderr, cwd: tmp },
    );
    // It started its APNs gateway and Apps and Books service and subscribed every channel for pushes.
    expect(stderr.text).to.match(/APNs gateway: https:\/\/127\.0\.0\.1:\d+/);
    expect(stderr.text).to.match(/Apps and Books service: https:\/\/127\.0\.0\.1:\d+\/mdm\/v2/);
    expect(stderr.text).to.match(/listening for pushes to 9 channels/);
    expect(result.exitCode, stderr.text + stdout.text).to.equal(0);
    expect(result.summary?.enrolled).to.equal(6);
    expect(result.summary?.byPlatform.macos).to.equal(3);
    expect(stdout.text).to.match(/^enroll\s+6\s+0\s/m);
    expect(stderr.text).to.include('enrolling: 6/6');

    const rerun = await runSimulator(
      [
        '--devices',
        '6',
        '--server',
        server.url,
        '--data-dir',
        path.join(tmp, 'data'),
        '--state-dir',
        path.join(tmp, 'cli-sim'),
        '--apns',
        'off',
        '--apple-vpp',
        'off',
      ],
      { stdout: new Buffered(), stderr, cwd: tmp },
    );
    expect(rerun.exitCode).to.equal(0);
    expect(rerun.summary?.enroll.ok).to.equal(0);
    expect(stderr.text).to.include('6 loaded');
  });
});
