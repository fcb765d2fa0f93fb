import { X509Certificate } from 'node:crypto';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { expect } from 'chai';
import { verifyDetached, verifyIssuedBy } from '../../shared/crypto/index.ts';
import {
  parseCheckin,
  parseCommandReport,
  resolveEnrollment,
  SHARED_IPAD_USER_ID,
} from '../../shared/mdm/index.ts';
import type { CheckinMessage, CommandReport } from '../../shared/mdm/index.ts';
import { decodePlistDict, encodePlist } from '../../shared/plist/index.ts';
import { randomSpec, seededRng } from '../../simulator/device/device-spec.ts';
import { DeviceRequestError, SimulatedDevice } from '../../simulator/device/sim-device.ts';
import type { DeviceEvent, SimulatedDeviceOptions } from '../../simulator/device/sim-device.ts';
import { FakeMdmServer, TEST_TOPIC, testPki } from './helpers/fake-mdm-server.ts';
import type { RecordedRequest, TestPki } from './helpers/fake-mdm-server.ts';

const SHA1_OID_DER = Buffer.from([0x06, 0x05, 0x2b, 0x0e, 0x03, 0x02, 0x1a]);

function checkin(r: RecordedRequest): CheckinMessage {
  return parseCheckin(decodePlistDict(r.body));
}

function report(r: RecordedRequest): CommandReport {
  return parseCommandReport(decodePlistDict(r.body));
}

/** Verifies the Mdm-Signature of a recorded request and returns the signer's certificate. */
function signer(r: RecordedRequest, pki: TestPki): X509Certificate {
  const header = r.headers['mdm-signature'];
  expect(header, 'Mdm-Signature header').to.be.a('string');
  const cms = Buffer.from(header as string, 'base64');
  const verified = verifyDetached(cms, r.body);
  verifyIssuedBy(verified.certificate, new X509Certificate(pki.deviceCaCertPem));
  return verified.certificate;
}

describe('SimulatedDevice against a recording MDM endpoint', function () {
  this.timeout(30_000);
  let pki: TestPki;
  let server: FakeMdmServer;
  let devices: SimulatedDevice[];
  let tmp: string;

  before(async () => {
    pki = await testPki();
  });

  beforeEach(async () => {
    server = new FakeMdmServer(pki);
    await server.start();
    devices = [];
    tmp = await mkdtemp(path.join(os.tmpdir(), 'sim-device-'));
  });

  afterEach(async () => {
    for (const d of devices) d.close();
    await server.close();
    await rm(tmp, { recursive: true, force: true });
  });

  async function make(
    kind: Parameters<typeof randomSpec>[0],
    seed: number,
    extra: Partial<SimulatedDeviceOptions> = {},
    specOptions: Parameters<typeof randomSpec>[2] = {},
  ): Promise<SimulatedDevice> {
    const d = await SimulatedDevice.create(randomSpec(kind, seededRng(seed), specOptions), {
      stateDir: null,
      ca: pki.caCertPem,
      ...extra,
    });
    devices.push(d);
    return d;
  }

  it('enrolls an iPhone: Authenticate then TokenUpdate, signed (SHA-256) by the profile identity', async () => {
    const d = await make('ios', 1);
    const events: DeviceEvent[] = [];
    d.on('event', (e) => events.push(e));
    await d.enroll(`${server.url}/mdm/enroll?token=t`);

    expect(d.enrolled).to.equal(true);
    expect(d.channels).to.deep.equal(['device']);
    const [auth, token] = server.checkins;
    expect(server.checkins).to.have.length(2);
    for (const r of server.checkins) {
      expect(r.method).to.equal('PUT');
      expect(r.headers['content-type']).to.equal('application/x-apple-aspen-mdm-checkin');
    }
    const a = checkin(auth as RecordedRequest);
    expect(a).to.deep.include({
      MessageType: 'Authenticate',
      UDID: d.udid,
      Topic: TEST_TOPIC,
      OSVersion: d.spec.osVersion,
      BuildVersion: d.spec.buildVersion,
      ProductName: d.spec.productName,
      SerialNumber: d.spec.serialNumber,
    });
    expect(a).to.not.have.property('DeviceName');
    const t = checkin(token as RecordedRequest);
    if (t.MessageType !== 'TokenUpdate') throw new Error('expected TokenUpdate');
    expect(Buffer.from(t.Token).toString('hex')).to.equal(d.pushInfo().token);
    expect(t.Token.byteLength).to.equal(32);
    expect(t.PushMagic).to.equal(d.pushInfo().pushMagic);
    expect(t.PushMagic).to.match(/^[0-9A-F-]{36}$/);
    expect(resolveEnrollment(t).id).to.equal(d.enrollmentId());

    const c1 = signer(auth as RecordedRequest, pki);
    const c2 = signer(token as RecordedRequest, pki);
    expect(c1.fingerprint256).to.equal(c2.fingerprint256);
    expect(c1.fingerprint256).to.equal(
      new X509Certificate(d.snapshot().identity?.certPem ?? '').fingerprint256,
    );
    expect(events.map((e) => e.type)).to.deep.equal(['checkin', 'checkin', 'enrolled']);
  });

  it('enrolls a Mac with its console user channel (same identity) from a CMS-signed profile', async () => {
    server.signProfile = true;
    const d = await make('macos', 2);
    await d.enroll(`${server.url}/mdm/enroll?token=t`);
    expect(d.channels).to.deep.equal(['device', 'user']);
    const msgs = server.checkins.map(checkin);
    expect(msgs.map((m) => m.MessageType)).to.deep.equal(['Authenticate', 'TokenUpdate', 'TokenUpdate']);
    expect(msgs[0]).to.deep.include({
      DeviceName: d.spec.deviceName,
      Model: d.spec.model,
      ModelName: d.spec.modelName,
    });
    const user = msgs[2];
    const consoleUser = d.spec.consoleUser;
    expect(user).to.deep.include({
      UDID: d.udid,
      UserID: consoleUser?.userId,
      UserShortName: consoleUser?.shortName,
      UserLongName: consoleUser?.longName,
    });
    if (user?.MessageType !== 'TokenUpdate' || msgs[1]?.MessageType !== 'TokenUpdate')
      throw new Error('TokenUpdate');
    expect(Buffer.from(user.Token).toString('hex')).to.equal(d.pushInfo('user').token);
    expect(d.pushInfo('user').token).to.not.equal(d.pushInfo('device').token);
    expect(resolveEnrollment(user).id).to.equal(`${d.udid}:${consoleUser?.userId}`);
    expect(d.enrollmentId('user')).to.equal(`${d.udid}:${consoleUser?.userId}`);
    const fps = server.checkins.map((r) => signer(r, pki).fingerprint256);
    expect(new Set(fps).size).to.equal(1);
  });

  it('signs with SHA-1 and no signed attributes when asked', async () => {
    const d = await make('ios', 3, { signature: 'sha1' });
    await d.enroll(`${server.url}/mdm/enroll?token=t`);
    for (const r of server.checkins) {
      signer(r, pki);
      const cms = Buffer.from(r.headers['mdm-signature'] as string, 'base64');
      expect(cms.includes(SHA1_OID_DER)).to.equal(true);
    }
  });

  it('can present the identity as a TLS client certificate instead of signing', async () => {
    const d = await make('ios', 4, { signature: 'none', tlsClientCertificate: true });
    await d.enroll(`${server.url}/mdm/enroll?token=t`);
    const identity = new X509Certificate(d.snapshot().identity?.certPem ?? '');
    for (const r of server.checkins) {
      expect(r.headers['mdm-signature']).to.equal(undefined);
      expect(r.peerCertificate?.equals(identity.raw)).to.equal(true);
    }
  });

  it('runs the command loop: Idle, then each result, until an empty answer', async () => {
    const d = await make('ios', 5, {}, { storeAccountShare: 1 });
    await d.enroll(`${server.url}/mdm/enroll?token=t`);
    server.enqueue('C-1', { RequestType: 'DeviceInformation', Queries: ['UDID', 'iTunesStoreAccountHash'] });
    server.enqueue('C-2', {
      RequestType: 'InviteToProgram',
      ProgramID: 'com.apple.cloudvpp',
      InvitationURL: 'https://vpp.example/invite/1',
    });
    server.enqueue('C-3', { RequestType: 'ProfileList' });
    const events: DeviceEvent[] = [];
    d.on('event', (e) => events.push(e));

    const result = await d.connect();
    expect(result.requests).to.equal(4);
    expect(result.commands).to.deep.equal([
      { commandUuid: 'C-1', requestType: 'DeviceInformation', status: 'Acknowledged' },
      { commandUuid: 'C-2', requestType: 'InviteToProgram', status: 'Acknowledged' },
      { commandUuid: 'C-3', requestType: 'ProfileList', status: 'Error' },
    ]);
    const reports = server.connects.map(report);
    for (const r of server.connects) signer(r, pki);
    expect(reports.map((r) => [r.Status, r.CommandUUID])).to.deep.equal([
      ['Idle', undefined],
      ['Acknowledged', 'C-1'],
      ['Acknowledged', 'C-2'],
      ['Error', 'C-3'],
    ]);
    expect(reports.every((r) => r.UDID === d.udid)).to.equal(true);
    expect(reports[1]?.raw['QueryResponses']).to.deep.equal({
      UDID: d.udid,
      iTunesStoreAccountHash: d.spec.storeAccount.appleIdHash,
    });
    expect(reports[2]?.raw['InvitationResult']).to.equal('Acknowledged');
    expect(reports[3]?.ErrorChain?.[0]).to.deep.include({
      ErrorCode: 12021,
      ErrorDomain: 'MCMDMErrorDomain',
    });
    expect(d.invitations).to.have.length(1);
    expect(d.invitations[0]).to.deep.include({
      commandUuid: 'C-2',
      invitationUrl: 'https://vpp.example/invite/1',
      status: 'Acknowledged',
      channel: 'device',
    });
    expect(events.map((e) => e.type)).to.deep.equal([
      'command',
      'result',
      'command',
      'invitation',
      'result',
      'command',
      'result',
      'connected',
    ]);
  });

  it('answers CommandFormatError to a command without a RequestType', async () => {
    const d = await make('ios', 12);
    await d.enroll(`${server.url}/mdm/enroll?token=t`);
    server.enqueueRaw(encodePlist({ CommandUUID: 'C-X', Command: { Queries: ['UDID'] } }));
    const r = await d.connect();
    expect(r.commands).to.deep.equal([
      { commandUuid: 'C-X', requestType: '(none)', status: 'CommandFormatError' },
    ]);
    const sent = report(server.connects[1] as RecordedRequest);
    expect(sent).to.deep.include({ Status: 'CommandFormatError', CommandUUID: 'C-X' });
    expect(sent.ErrorChain).to.have.length(1);
  });

  it('answers NotNow to InviteToProgram in Setup Assistant and remembers the invitation', async () => {
    const d = await make('ios', 6, {}, { setupAssistant: true });
    await d.enroll(`${server.url}/mdm/enroll?token=t`);
    const token = checkin(server.checkins[1] as RecordedRequest);
    expect(token).to.have.property('AwaitingConfiguration', true);
    server.enqueue('C-9', {
      RequestType: 'InviteToProgram',
      ProgramID: 'com.apple.cloudvpp',
      InvitationURL: 'https://vpp.example/invite/9',
    });
    const r = await d.connect();
    expect(r.commands).to.deep.equal([
      { commandUuid: 'C-9', requestType: 'InviteToProgram', status: 'NotNow' },
    ]);
    expect(d.invitations[0]).to.deep.include({ commandUuid: 'C-9', status: 'NotNow' });
    expect(d.wantsToPoll()).to.equal(true);
    await d.setSetupAssistant(false);
    server.enqueue('C-9', {
      RequestType: 'InviteToProgram',
      ProgramID: 'com.apple.cloudvpp',
      InvitationURL: 'https://vpp.example/invite/9',
    });
    const polls = await d.pollIfPending();
    expect(polls.map((p) => p.commands)).to.deep.equal([
      [{ commandUuid: 'C-9', requestType: 'InviteToProgram', status: 'Acknowledged' }],
    ]);
    expect(d.wantsToPoll()).to.equal(false);
    expect(d.invitations).to.have.length(1);
    expect(d.invitations[0]).to.deep.include({ commandUuid: 'C-9', status: 'Acknowledged' });
  });

  it('sends the macOS user channel keys on a user-channel connect', async () => {
    const d = await make('macos', 7);
    await d.enroll(`${server.url}/mdm/enroll?token=t`);
    const r = await d.connect('user');
    expect(r.enrollmentId).to.equal(d.enrollmentId('user'));
    const idle = report(server.connects[0] as RecordedRequest);
    expect(idle).to.deep.include({ Status: 'Idle', UDID: d.udid, UserID: d.spec.consoleUser?.userId });
    expect(resolveEnrollment(idle).id).to.equal(d.enrollmentId('user'));
  });

  it('enrolls a Shared iPad with its signed-in user channel (UserID FFFFFFFF-…, keyed by UserShortName)', async () => {
    const d = await make('ipados', 13, {}, { sharedIpad: true });
    await d.enroll(`${server.url}/mdm/enroll?token=t`);
    expect(d.channels).to.deep.equal(['device', 'user']);
    const user = checkin(server.checkins[2] as RecordedRequest);
    expect(user).to.deep.include({ MessageType: 'TokenUpdate', UserID: SHARED_IPAD_USER_ID });
    expect(user.UserShortName).to.match(/@/);
    expect(resolveEnrollment(user)).to.deep.include({
      channel: 'shared_ipad_user',
      id: `${d.udid}:${String(user.UserShortName)}`,
    });
    expect(d.enrollmentId('user')).to.equal(resolveEnrollment(user).id);
  });

  it('enrolls under User Enrollment with EnrollmentID and no hardware identifiers', async () => {
    const d = await make('ios', 8, {}, { userEnrollment: true });
    await d.enroll(`${server.url}/mdm/enroll?token=t`);
    const a = checkin(server.checkins[0] as RecordedRequest);
    expect(a.UDID).to.equal(undefined);
    expect(a.SerialNumber).to.equal(undefined);
    expect(a.EnrollmentID).to.equal(d.spec.enrollmentId);
    expect(d.enrollmentId()).to.equal(d.spec.enrollmentId);
  });

  it('keeps its state across a restart: no re-enrollment, same identity and push info', async () => {
    const first = await make('macos', 9, { stateDir: tmp });
    await first.enroll(`${server.url}/mdm/enroll?token=t`);
    const saved = first.snapshot();
    first.close();
    const json: unknown = JSON.parse(await readFile(path.join(tmp, `${first.udid}.json`), 'utf8'));
    expect(json).to.have.property('enrolled', true);

    const again = await SimulatedDevice.load(first.udid, { stateDir: tmp, ca: pki.caCertPem });
    devices.push(again);
    expect(again.snapshot()).to.deep.equal(saved);
    const before = server.requests.length;
    await again.connect('device');
    await again.connect('user');
    expect(server.requests.slice(before).map((r) => r.path)).to.deep.equal(['/mdm/connect', '/mdm/connect']);
    expect(signer(server.connects[0] as RecordedRequest, pki).fingerprint256).to.equal(
      new X509Certificate(saved.identity?.certPem ?? '').fingerprint256,
    );
  });

  it('checks out', async () => {
    const d = await make('ios', 10);
    await d.enroll(`${server.url}/mdm/enroll?token=t`);
    await d.checkOut();
    const msg = checkin(server.checkins[2] as RecordedRequest);
    expect(msg).to.deep.include({ MessageType: 'CheckOut', UDID: d.udid, Topic: TEST_TOPIC });
    expect(d.enrolled).to.equal(false);
    let failed: unknown = null;
    await d.connect().catch((err: unknown) => (failed = err));
    expect(failed).to.be.instanceOf(Error);
  });

  it('reports a refused check-in as DeviceRequestError and an error event', async () => {
    server.checkinStatus = 403;
    const d = await make('ios', 11);
    const events: DeviceEvent[] = [];
    d.on('event', (e) => events.push(e));
    let failed: unknown = null;
    await d.enroll(`${server.url}/mdm/enroll?token=t`).catch((err: unknown) => (failed = err));
    expect(failed).to.be.instanceOf(DeviceRequestError);
    expect((failed as DeviceRequestError).status).to.equal(403);
    expect(d.enrolled).to.equal(false);
    expect(events.at(-1)).to.deep.include({ type: 'error', operation: 'enroll' });
  });
});
