import { expect } from 'chai';
import { randomUUID } from 'node:crypto';
import { createCaCertificate, generateKeyPair, issueCertificate } from '../../shared/crypto/index.ts';
import { encodePlist, type PlistDict } from '../../shared/plist/index.ts';
import { enrollIdentity, mdmPayload, sendSigned, type EnrolledIdentity } from '../helpers/identity.ts';
import { startTestServer, type TestServer } from '../helpers/test-server.ts';

const MAX_BODY = 64 * 1024;

function authenticate(udid: string, topic: string): PlistDict {
  return {
    MessageType: 'Authenticate',
    UDID: udid,
    Topic: topic,
    OSVersion: '17.5',
    BuildVersion: '21F79',
    ProductName: 'iPhone14,2',
    SerialNumber: 'F2LXK1ABCD12',
  };
}

function tokenUpdate(udid: string, topic: string, extra: PlistDict = {}): PlistDict {
  return {
    MessageType: 'TokenUpdate',
    UDID: udid,
    Topic: topic,
    Token: new Uint8Array(32).fill(7),
    PushMagic: randomUUID(),
    ...extra,
  };
}

describe('device endpoints', function () {
  this.timeout(120_000);
  let ts: TestServer;
  let a: EnrolledIdentity;
  let b: EnrolledIdentity;
  let topic: string;
  const udidA = '00008020-000A1B2C3D4E5F60';
  const udidB = '00008020-000B1B2C3D4E5F61';

  before(async () => {
    ts = await startTestServer({ MDM_MAX_BODY_BYTES: String(MAX_BODY) });
    [a, b] = await Promise.all([enrollIdentity(ts), enrollIdentity(ts)]);
    topic = mdmPayload(a.profile).Topic as string;
    for (const [id, udid] of [
      [a, udidA],
      [b, udidB],
    ] as const) {
      expect((await sendSigned(ts, '/mdm/checkin', id, authenticate(udid, topic))).status).to.equal(200);
      expect((await sendSigned(ts, '/mdm/checkin', id, tokenUpdate(udid, topic))).status).to.equal(200);
    }
  });

  after(async () => {
    await ts?.stop();
  });

  /** Everything an admin can see about both devices: must not change after a refused request. */
  async function snapshot(): Promise<string> {
    const parts = await Promise.all([
      ts.api('GET', `/devices/${udidA}`),
      ts.api('GET', `/devices/${udidB}`),
      ts.api('GET', `/devices/${udidA}/commands`),
      ts.api('GET', `/devices/${udidB}/commands`),
      ts.api('GET', '/devices'),
    ]);
    return JSON.stringify(
      parts.map((p) => {
        const v = p.json<Record<string, unknown>>();
        return JSON.parse(JSON.stringify(v, (k, val: unknown) => (k === 'lastSeenAt' ? undefined : val)));
      }),
    );
  }

  it('the profile has the com.apple.mdm payload the spec lists', () => {
    const mdm = mdmPayload(a.profile);
    expect(mdm.ServerURL).to.equal(`${ts.server.url}/mdm/connect`);
    expect(mdm.CheckInURL).to.equal(`${ts.server.url}/mdm/checkin`);
    expect(mdm.SignMessage).to.equal(true);
    expect(mdm.AccessRights).to.equal(8191);
    expect(mdm.CheckOutWhenRemoved).to.equal(true);
    expect(mdm.ServerCapabilities).to.deep.equal(['com.apple.mdm.per-user-connections']);
    expect(topic).to.match(/^com\.apple\.mgmt\.External\./);
    const payloads = a.profile.PayloadContent as PlistDict[];
    const identity = payloads.find((p) => p.PayloadType === 'com.apple.security.pkcs12');
    expect(mdm.IdentityCertificateUUID).to.equal(identity?.PayloadUUID);
    expect(payloads.some((p) => p.PayloadType === 'com.apple.security.root')).to.equal(true);
  });

  it('an invalid enrollment token gets 403', async () => {
    expect((await ts.request('GET', '/mdm/enroll?token=nope')).status).to.equal(403);
    expect((await ts.request('GET', '/mdm/enroll')).status).to.equal(403);
  });

  it('marks devices enrolled after the first TokenUpdate', async () => {
    const d = (await ts.api('GET', `/devices/${udidA}`)).json<{
      enrolled: boolean;
      platform: string;
      model: string;
    }>();
    expect(d.enrolled).to.equal(true);
    expect(d.platform).to.equal('ios');
    expect(d.model).to.equal('iPhone14,2');
  });

  describe('bad input corpus: a clear 4xx and nothing stored', () => {
    const deep = '<array>'.repeat(2000) + '</array>'.repeat(2000);
    const lol =
      '<?xml version="1.0"?><!DOCTYPE plist [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">' +
      '<!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;">]><plist version="1.0"><dict><key>MessageType</key><string>&c;</string></dict></plist>';
    const valid = encodePlist(tokenUpdate(udidA, topic || 'x'));
    const cases: {
      name: string;
      route: '/mdm/checkin' | '/mdm/connect';
      body: () => string | Buffer;
      status: number;
    }[] = [
      { name: 'empty body', route: '/mdm/checkin', body: () => '', status: 400 },
      {
        name: 'truncated plist',
        route: '/mdm/checkin',
        body: () => valid.slice(0, valid.length / 2),
        status: 400,
      },
      {
        name: 'JSON instead of a plist',
        route: '/mdm/checkin',
        body: () => '{"MessageType":"Authenticate"}',
        status: 400,
      },
      {
        name: 'binary garbage',
        route: '/mdm/connect',
        body: () => Buffer.from([0, 1, 2, 3, 255, 254]),
        status: 400,
      },
      {
        name: 'UDID of the wrong type',
        route: '/mdm/checkin',
        body: () =>
          encodePlist({
            MessageType: 'TokenUpdate',
            UDID: 42,
            Topic: topic,
            Token: new Uint8Array(32),
            PushMagic: 'x',
          }),
        status: 400,
      },
      {
        name: 'Token as a string',
        route: '/mdm/checkin',
        body: () =>
          encodePlist({
            MessageType: 'TokenUpdate',
            UDID: udidA,
            Topic: topic,
            Token: 'abc',
            PushMagic: 'x',
          }),
        status: 400,
      },
      {
        name: 'a plist that is not a dict',
        route: '/mdm/connect',
        body: () => encodePlist(['Idle']),
        status: 400,
      },
      {
        name: 'deeply nested',
        route: '/mdm/checkin',
        body: () => `<plist version="1.0">${deep}</plist>`,
        status: 400,
      },
      { name: 'entity expansion', route: '/mdm/checkin', body: () => lol, status: 400 },
      {
        name: 'unknown MessageType',
        route: '/mdm/checkin',
        body: () => encodePlist({ MessageType: 'Bogus', UDID: udidA }),
        status: 400,
      },
      {
        name: 'unknown Status',
        route: '/mdm/connect',
        body: () => encodePlist({ UDID: udidA, Status: 'Maybe', CommandUUID: 'x' }),
        status: 400,
      },
      {
        name: 'a result without CommandUUID',
        route: '/mdm/connect',
        body: () => encodePlist({ UDID: udidA, Status: 'Acknowledged' }),
        status: 400,
      },
      {
        name: 'huge body',
        route: '/mdm/connect',
        body: () => encodePlist({ UDID: udidA, Status: 'Idle', Pad: 'x'.repeat(MAX_BODY + 10) }),
        status: 413,
      },
      {
        name: "another device's UDID (TokenUpdate)",
        route: '/mdm/checkin',
        body: () => encodePlist(tokenUpdate(udidB, topic)),
        status: 403,
      },
      {
        name: "another device's UDID (Authenticate)",
        route: '/mdm/checkin',
        body: () => encodePlist(authenticate(udidB, topic)),
        status: 403,
      },
      {
        name: "another device's UDID (connect)",
        route: '/mdm/connect',
        body: () => encodePlist({ UDID: udidB, Status: 'Idle' }),
        status: 403,
      },
      {
        name: "another device's UDID (CheckOut)",
        route: '/mdm/checkin',
        body: () => encodePlist({ MessageType: 'CheckOut', UDID: udidB, Topic: topic }),
        status: 403,
      },
    ];
    for (const c of cases) {
      it(`${c.name} → ${c.status}`, async () => {
        const before = await snapshot();
        const res = await sendSigned(ts, c.route, a, c.body());
        expect(res.status, res.text).to.equal(c.status);
        expect(res.text.length).to.be.greaterThan(0);
        expect(await snapshot()).to.equal(before);
      });
    }

    it('unsigned, tampered, foreign-CA and expired messages → 403', async () => {
      const before = await snapshot();
      const body = encodePlist(tokenUpdate(udidA, topic));
      const unsigned = await ts.request('PUT', '/mdm/checkin', { body });
      expect(unsigned.status).to.equal(403);

      const signed = await sendSigned(ts, '/mdm/checkin', a, body);
      expect(signed.status).to.equal(200); // control: the same body signed is fine
      const beforeTamper = await snapshot();
      const sig = (await import('../../shared/crypto/index.ts')).signDetached(
        Buffer.from(body),
        a.certPem,
        a.keyPem,
      );
      const tampered = await ts.request('PUT', '/mdm/checkin', {
        body: body.replace('TokenUpdate', 'TokenUpdatf'),
        headers: { 'mdm-signature': sig.toString('base64') },
      });
      expect(tampered.status).to.equal(403);
      const garbage = await ts.request('PUT', '/mdm/checkin', {
        body,
        headers: { 'mdm-signature': 'bm90IGEgY21z' },
      });
      expect(garbage.status).to.equal(403);

      const keys = await generateKeyPair(2048);
      const foreignCa = createCaCertificate({
        subject: { CN: 'Evil CA' },
        keyPem: keys.privateKeyPem,
        days: 30,
      });
      const leafKeys = await generateKeyPair(2048);
      const foreignLeaf = issueCertificate({
        kind: 'client',
        subject: { CN: 'evil device' },
        publicKeyPem: leafKeys.publicKeyPem,
        issuerCertPem: foreignCa,
        issuerKeyPem: keys.privateKeyPem,
        days: 30,
      });
      const foreign = await sendSigned(
        ts,
        '/mdm/checkin',
        { certPem: foreignLeaf, keyPem: leafKeys.privateKeyPem },
        body,
      );
      expect(foreign.status).to.equal(403);
      // Issued by the real device CA, but expired.
      const { promises: fs } = await import('node:fs');
      const path = await import('node:path');
      const caDir = path.join(ts.dataDir, 'certs');
      const expiredKeys = await generateKeyPair(2048);
      const expired = issueCertificate({
        kind: 'client',
        subject: { CN: 'expired device' },
        publicKeyPem: expiredKeys.publicKeyPem,
        issuerCertPem: await fs.readFile(path.join(caDir, 'device-ca.pem'), 'utf8'),
        issuerKeyPem: await fs.readFile(path.join(caDir, 'device-ca.key.pem'), 'utf8'),
        days: 1,
        notBefore: new Date(Date.now() - 3 * 86_400_000),
        notAfter: new Date(Date.now() - 86_400_000),
      });
      const old = await sendSigned(
        ts,
        '/mdm/checkin',
        { certPem: expired, keyPem: expiredKeys.privateKeyPem },
        body,
      );
      expect(old.status).to.equal(403);
      expect(await snapshot()).to.equal(beforeTamper);
      expect(before.length).to.be.greaterThan(0);
    });

    it('never answers 401 to a device, and keeps serving', async () => {
      const res = await sendSigned(ts, '/mdm/connect', a, encodePlist({ UDID: udidA, Status: 'Idle' }));
      expect(res.status).to.equal(200);
      expect(res.body.length).to.equal(0);
    });
  });

  it('accepts replayed identical signed bodies', async () => {
    const body = Buffer.from(encodePlist({ UDID: udidA, Status: 'Idle' }));
    for (let i = 0; i < 3; i++) {
      const res = await sendSigned(ts, '/mdm/connect', a, body);
      expect(res.status).to.equal(200);
    }
    const tu = Buffer.from(encodePlist(tokenUpdate(udidA, topic)));
    expect((await sendSigned(ts, '/mdm/checkin', a, tu)).status).to.equal(200);
    expect((await sendSigned(ts, '/mdm/checkin', a, tu)).status).to.equal(200);
  });

  it('UserAuthenticate → 410', async () => {
    const res = await sendSigned(ts, '/mdm/checkin', a, {
      MessageType: 'UserAuthenticate',
      UDID: udidA,
      UserID: randomUUID().toUpperCase(),
    });
    expect(res.status).to.equal(410);
  });

  it('serves commands in order, skips a NotNow until the next Idle, stores results once', async () => {
    const q1 = await ts.api('POST', `/devices/${udidA}/commands`, {
      requestType: 'DeviceInformation',
      Queries: ['UDID'],
    });
    const q2 = await ts.api('POST', `/devices/${udidA}/commands`, { requestType: 'ProfileList' });
    expect(q1.status).to.equal(201);
    expect(q2.status).to.equal(201);
    const c1 = q1.json<{ commandUuid: string }>().commandUuid;
    const c2 = q2.json<{ commandUuid: string }>().commandUuid;
    const { decodePlistDict } = await import('../../shared/plist/index.ts');
    const uuidOf = (buf: Buffer) => (buf.length === 0 ? null : (decodePlistDict(buf).CommandUUID as string));

    let res = await sendSigned(ts, '/mdm/connect', a, { UDID: udidA, Status: 'Idle' });
    expect(uuidOf(res.body)).to.equal(c1);
    res = await sendSigned(ts, '/mdm/connect', a, { UDID: udidA, Status: 'NotNow', CommandUUID: c1 });
    expect(uuidOf(res.body)).to.equal(c2); // c1 skipped for the rest of this conversation
    const ack2 = Buffer.from(encodePlist({ UDID: udidA, Status: 'Acknowledged', CommandUUID: c2 }));
    res = await sendSigned(ts, '/mdm/connect', a, ack2);
    expect(res.body.length).to.equal(0); // c1 is still skipped: nothing left
    res = await sendSigned(ts, '/mdm/connect', a, ack2); // a re-reported result
    expect(res.status).to.equal(200);

    let list = (await ts.api('GET', `/devices/${udidA}/commands`)).json<{
      items: { commandUuid: string; status: string }[];
    }>();
    expect(list.items.find((i) => i.commandUuid === c1)?.status).to.equal('not_now');
    expect(list.items.filter((i) => i.commandUuid === c2).map((i) => i.status)).to.deep.equal([
      'acknowledged',
    ]);

    res = await sendSigned(ts, '/mdm/connect', a, { UDID: udidA, Status: 'Idle' });
    expect(uuidOf(res.body)).to.equal(c1); // offered again on Idle
    res = await sendSigned(ts, '/mdm/connect', a, {
      UDID: udidA,
      Status: 'Acknowledged',
      CommandUUID: c1,
      QueryResponses: { UDID: udidA },
    });
    expect(res.body.length).to.equal(0);
    list = (await ts.api('GET', `/devices/${udidA}/commands`)).json();
    const done = list.items.find((i) => i.commandUuid === c1) as unknown as {
      status: string;
      result: { QueryResponses: { UDID: string } };
    };
    expect(done.status).to.equal('acknowledged');
    expect(done.result.QueryResponses.UDID).to.equal(udidA);
  });

  it('identifies a device by its TLS client certificate too', async () => {
    const res = await ts.request('PUT', '/mdm/connect', {
      body: encodePlist({ UDID: udidB, Status: 'Idle' }),
      cert: b.certPem,
      key: b.keyPem,
    });
    expect(res.status, res.text).to.equal(200);
    const wrong = await ts.request('PUT', '/mdm/connect', {
      body: encodePlist({ UDID: udidA, Status: 'Idle' }),
      cert: b.certPem,
      key: b.keyPem,
    });
    expect(wrong.status).to.equal(403);
  });

  it('ignores a proxy Client-Cert header unless trusted', async () => {
    const der = new (await import('node:crypto')).X509Certificate(b.certPem).raw.toString('base64');
    const res = await ts.request('PUT', '/mdm/connect', {
      body: encodePlist({ UDID: udidB, Status: 'Idle' }),
      headers: { 'client-cert': `:${der}:` },
    });
    expect(res.status).to.equal(403);
  });

  it('macOS user channel: TokenUpdate with UserID makes a UDID:UserID channel', async () => {
    const mac = await enrollIdentity(ts);
    const udid = randomUUID().toUpperCase();
    const userId = randomUUID().toUpperCase();
    const auth = {
      MessageType: 'Authenticate',
      UDID: udid,
      Topic: topic,
      OSVersion: '14.5',
      BuildVersion: '23F79',
      ProductName: 'Mac14,2',
      Model: 'Mac14,2',
      ModelName: 'MacBook Air',
      SerialNumber: 'C02XYZ123456',
      DeviceName: 'Test Mac',
    };
    expect((await sendSigned(ts, '/mdm/checkin', mac, auth)).status).to.equal(200);
    expect((await sendSigned(ts, '/mdm/checkin', mac, tokenUpdate(udid, topic))).status).to.equal(200);
    const userTu = tokenUpdate(udid, topic, {
      UserID: userId,
      UserShortName: 'alice',
      UserLongName: 'Alice A',
    });
    expect((await sendSigned(ts, '/mdm/checkin', mac, userTu)).status).to.equal(200);
    const d = (await ts.api('GET', `/devices/${udid}`)).json<{
      platform: string;
      model: string;
      channels: { enrollmentId: string; userShortName?: string }[];
    }>();
    expect(d.platform).to.equal('macos');
    expect(d.model).to.equal('Mac14,2');
    expect(d.channels.map((c) => c.enrollmentId).sort()).to.deep.equal([udid, `${udid}:${userId}`].sort());
    const q = await ts.api('POST', `/devices/${udid}/commands`, {
      requestType: 'ProfileList',
      enrollmentId: `${udid}:${userId}`,
    });
    expect(q.status).to.equal(201);
    const res = await sendSigned(ts, '/mdm/connect', mac, { UDID: udid, UserID: userId, Status: 'Idle' });
    expect(res.body.length).to.be.greaterThan(0);
    const none = await sendSigned(ts, '/mdm/connect', mac, { UDID: udid, Status: 'Idle' });
    expect(none.body.length).to.equal(0); // the device channel has nothing
  });

  it('CheckOut marks the device not enrolled', async () => {
    const x = await enrollIdentity(ts);
    const udid = '00008030-000C1B2C3D4E5F62';
    await sendSigned(ts, '/mdm/checkin', x, authenticate(udid, topic));
    await sendSigned(ts, '/mdm/checkin', x, tokenUpdate(udid, topic));
    expect((await ts.api('GET', `/devices/${udid}`)).json<{ enrolled: boolean }>().enrolled).to.equal(true);
    const res = await sendSigned(ts, '/mdm/checkin', x, {
      MessageType: 'CheckOut',
      UDID: udid,
      Topic: topic,
    });
    expect(res.status).to.equal(200);
    const d = (await ts.api('GET', `/devices/${udid}`)).json<{
      enrolled: boolean;
      checkedOutAt: string | null;
    }>();
    expect(d.enrolled).to.equal(false);
    expect(d.checkedOutAt).to.be.a('string');
    const connect = await sendSigned(ts, '/mdm/connect', x, { UDID: udid, Status: 'Idle' });
    expect(connect.status).to.equal(403);
  });
});
