import { expect } from 'chai';
import {
  CHECKIN_MESSAGE_TYPES,
  encodeCheckin,
  parseCheckin,
  ProtocolError,
  resolveEnrollment,
  SHARED_IPAD_USER_ID,
} from '../../../shared/mdm/index.ts';
import type { CheckinMessage, EnrollmentRef, ProtocolErrorCode } from '../../../shared/mdm/index.ts';
import { decodePlistDict } from '../../../shared/plist/index.ts';
import type { PlistDict } from '../../../shared/plist/index.ts';
import { readFixture } from '../plist/test-files.ts';

const TOPIC = 'com.apple.mgmt.External.0a10f4ef-2b30-4fc1-acd0-b9268777a766';
const IPHONE = '00008110-000C2D5A1E38801E';
const MAC = '578C3494-731F-4BBB-A426-ABEF9488F698';
const IPAD = '00008103-001E4C2A0C91001E';
const ENROLLMENT_ID = 'BEE7EE72-20E3-490E-815C-2D17CC14F3E6';

function hex(bytes: Uint8Array | undefined): string | undefined {
  return bytes === undefined ? undefined : Buffer.from(bytes).toString('hex');
}

function checkin(file: string): CheckinMessage {
  return parseCheckin(decodePlistDict(readFixture(`checkin/${file}`)));
}

interface FixtureCase {
  file: string;
  enrollment: EnrollmentRef;
  check: (msg: CheckinMessage) => void;
}

const fixtures: FixtureCase[] = [
  {
    file: 'authenticate.ios.plist',
    enrollment: { id: IPHONE, deviceId: IPHONE, channel: 'device' },
    check: (msg) => {
      if (msg.MessageType !== 'Authenticate') throw new Error(msg.MessageType);
      expect(msg.Topic).to.equal(TOPIC);
      expect(msg.ProductName).to.equal('iPhone14,5');
      expect(msg.OSVersion).to.equal('17.5.1');
      expect(msg.BuildVersion).to.equal('21F90');
      expect(msg.SerialNumber).to.equal('F2LZX0Q1N7KM');
      expect(msg.IMEI).to.equal('35 407115 098761 3');
      expect(msg.DeviceName).to.equal(undefined);
      expect(msg.Model).to.equal(undefined);
    },
  },
  {
    file: 'authenticate.macos.plist',
    enrollment: { id: MAC, deviceId: MAC, channel: 'device' },
    check: (msg) => {
      if (msg.MessageType !== 'Authenticate') throw new Error(msg.MessageType);
      expect(msg.DeviceName).to.equal('Studio & Lab Mac');
      expect(msg.Model).to.equal('Mac14,13');
      expect(msg.ModelName).to.equal('Mac Studio');
      expect(Buffer.from(msg.Challenge ?? []).toString('utf8')).to.equal('challenge-7f3a');
    },
  },
  {
    file: 'token-update.ios.plist',
    enrollment: { id: IPHONE, deviceId: IPHONE, channel: 'device' },
    check: (msg) => {
      if (msg.MessageType !== 'TokenUpdate') throw new Error(msg.MessageType);
      expect(hex(msg.Token)).to.equal('2a51d6fd58331e5e88d783fdc593e968006881e64d0489c3c0de7a991d674c07');
      expect(msg.PushMagic).to.equal('671C0CE7-5035-42D6-884F-932D058E4AEE');
      expect(msg.UnlockToken?.byteLength).to.equal(300);
      expect(msg.AwaitingConfiguration).to.equal(false);
    },
  },
  {
    file: 'token-update.macos-device.plist',
    enrollment: { id: MAC, deviceId: MAC, channel: 'device' },
    check: (msg) => {
      if (msg.MessageType !== 'TokenUpdate') throw new Error(msg.MessageType);
      expect(msg.Token.byteLength).to.equal(32);
      expect(msg.UserID).to.equal(undefined);
      expect(msg.UnlockToken).to.equal(undefined);
    },
  },
  {
    file: 'token-update.macos-user.plist',
    enrollment: {
      id: `${MAC}:1B2B5A4B-45DB-4E85-8BB0-3E6EA28A89C4`,
      deviceId: MAC,
      channel: 'user',
      userId: '1B2B5A4B-45DB-4E85-8BB0-3E6EA28A89C4',
      userShortName: 'rkumar',
    },
    check: (msg) => {
      if (msg.MessageType !== 'TokenUpdate') throw new Error(msg.MessageType);
      expect(msg.UserLongName).to.equal('Ravi Kumar');
      expect(msg.NotOnConsole).to.equal(false);
      expect(hex(msg.Token)).to.equal('d588043d12b844631da2bb0cb238f1b2773ddaa475304d7f0d3468f9de0a8a2d');
    },
  },
  {
    file: 'token-update.shared-ipad-user.plist',
    enrollment: {
      id: `${IPAD}:ayesha.ono@students.example.edu`,
      deviceId: IPAD,
      channel: 'shared_ipad_user',
      userId: SHARED_IPAD_USER_ID,
      userShortName: 'ayesha.ono@students.example.edu',
    },
    check: (msg) => {
      if (msg.MessageType !== 'TokenUpdate') throw new Error(msg.MessageType);
      expect(msg.UserID).to.equal(SHARED_IPAD_USER_ID);
    },
  },
  {
    file: 'token-update.user-enrollment-device.plist',
    enrollment: { id: ENROLLMENT_ID, deviceId: ENROLLMENT_ID, channel: 'user_enrollment_device' },
    check: (msg) => {
      if (msg.MessageType !== 'TokenUpdate') throw new Error(msg.MessageType);
      expect(msg.UDID).to.equal(undefined);
      expect(msg.EnrollmentID).to.equal(ENROLLMENT_ID);
    },
  },
  {
    file: 'token-update.user-enrollment-user.plist',
    enrollment: {
      id: `${ENROLLMENT_ID}:16A86F7D-B8F0-4C1C-97CC-3770B6A27635`,
      deviceId: ENROLLMENT_ID,
      channel: 'user_enrollment_user',
      userId: '16A86F7D-B8F0-4C1C-97CC-3770B6A27635',
      userShortName: 'mlee',
    },
    check: (msg) => {
      if (msg.MessageType !== 'TokenUpdate') throw new Error(msg.MessageType);
      expect(msg.EnrollmentUserID).to.equal('16A86F7D-B8F0-4C1C-97CC-3770B6A27635');
      expect(msg.Token.byteLength).to.equal(16);
    },
  },
  {
    file: 'check-out.plist',
    enrollment: { id: MAC, deviceId: MAC, channel: 'device' },
    check: (msg) => {
      if (msg.MessageType !== 'CheckOut') throw new Error(msg.MessageType);
      expect(msg.Topic).to.equal(TOPIC);
    },
  },
  {
    file: 'user-authenticate.plist',
    enrollment: {
      id: `${MAC}:3A9120A4-3B47-4445-A104-53F6D369D0F8`,
      deviceId: MAC,
      channel: 'user',
      userId: '3A9120A4-3B47-4445-A104-53F6D369D0F8',
      userShortName: 'netuser',
    },
    check: (msg) => {
      if (msg.MessageType !== 'UserAuthenticate') throw new Error(msg.MessageType);
      expect(msg.UserID).to.equal('3A9120A4-3B47-4445-A104-53F6D369D0F8');
      expect(msg.DigestResponse).to.equal(undefined);
    },
  },
  {
    file: 'get-bootstrap-token.plist',
    enrollment: { id: MAC, deviceId: MAC, channel: 'device' },
    check: (msg) => {
      if (msg.MessageType !== 'GetBootstrapToken') throw new Error(msg.MessageType);
      expect(msg.AwaitingConfiguration).to.equal(true);
    },
  },
  {
    file: 'set-bootstrap-token.plist',
    enrollment: { id: MAC, deviceId: MAC, channel: 'device' },
    check: (msg) => {
      if (msg.MessageType !== 'SetBootstrapToken') throw new Error(msg.MessageType);
      expect(msg.BootstrapToken?.byteLength).to.equal(48);
    },
  },
  {
    file: 'declarative-management.plist',
    enrollment: { id: IPHONE, deviceId: IPHONE, channel: 'device' },
    check: (msg) => {
      if (msg.MessageType !== 'DeclarativeManagement') throw new Error(msg.MessageType);
      expect(msg.Endpoint).to.equal('status');
      expect(JSON.parse(Buffer.from(msg.Data ?? []).toString('utf8'))).to.deep.equal({
        StatusItems: { device: { identifier: { udid: IPHONE } } },
        Errors: [],
      });
    },
  },
  {
    file: 'get-token.plist',
    enrollment: { id: IPHONE, deviceId: IPHONE, channel: 'device' },
    check: (msg) => {
      if (msg.MessageType !== 'GetToken') throw new Error(msg.MessageType);
      expect(msg.TokenServiceType).to.equal('com.apple.watch.pairing');
      expect(msg.TokenParameters?.['PhoneUDID']).to.equal(IPHONE);
    },
  },
];

function expectProtocolError(fn: () => unknown, code: ProtocolErrorCode, field: string | undefined): void {
  let caught: unknown;
  try {
    fn();
  } catch (err) {
    caught = err;
  }
  expect(caught, 'should throw').to.be.instanceOf(ProtocolError);
  const err = caught as ProtocolError;
  expect(err.code).to.equal(code);
  expect(err.field).to.equal(field);
  expect(err.message).to.be.a('string').and.not.equal('');
}

const TOKEN = Uint8Array.from(
  Buffer.from('7484f5cab517efd0a015192d8b2ab2a7cf33ca4a31feeafe50a235e73b496347', 'hex'),
);
const goodTokenUpdate = {
  MessageType: 'TokenUpdate',
  Topic: TOPIC,
  UDID: MAC,
  Token: TOKEN,
  PushMagic: '84AA9B62-C1CB-4C10-87F1-AC43F476DF69',
} satisfies PlistDict;

function without(dict: PlistDict, key: string): PlistDict {
  const copy = { ...dict };
  delete copy[key];
  return copy;
}

describe('parseCheckin', () => {
  describe('fixtures, one per message type and channel', () => {
    for (const { file, enrollment, check } of fixtures) {
      it(`${file} → ${enrollment.channel} ${enrollment.id}`, () => {
        const msg = checkin(file);
        check(msg);
        expect(resolveEnrollment(msg)).to.deep.equal(enrollment);
      });
    }

    it('covers every check-in message type', () => {
      const types = new Set(fixtures.map(({ file }) => checkin(file).MessageType));
      expect([...types].sort()).to.deep.equal([...CHECKIN_MESSAGE_TYPES].sort());
    });
  });

  it('keeps keys it does not know', () => {
    const msg = parseCheckin({ ...goodTokenUpdate, FutureKey: 'kept', Nested: { a: 1 } });
    expect(msg['FutureKey']).to.equal('kept');
    expect(msg['Nested']).to.deep.equal({ a: 1 });
  });

  it('reads an Authenticate with only the required keys', () => {
    const msg = parseCheckin({ MessageType: 'Authenticate', Topic: TOPIC, UDID: IPHONE });
    expect(msg).to.deep.equal({ MessageType: 'Authenticate', Topic: TOPIC, UDID: IPHONE });
  });

  describe('refuses', () => {
    const cases: [string, PlistDict, ProtocolErrorCode, string | undefined][] = [
      [
        'a missing MessageType',
        without(goodTokenUpdate, 'MessageType'),
        'unknown_message_type',
        'MessageType',
      ],
      [
        'an unknown MessageType',
        { ...goodTokenUpdate, MessageType: 'Hello' },
        'unknown_message_type',
        'MessageType',
      ],
      [
        'a lower-case MessageType',
        { ...goodTokenUpdate, MessageType: 'tokenupdate' },
        'unknown_message_type',
        'MessageType',
      ],
      [
        'a MessageType that is not a string',
        { ...goodTokenUpdate, MessageType: 1 },
        'unknown_message_type',
        'MessageType',
      ],
      ['UDID as an integer', { ...goodTokenUpdate, UDID: 12345 }, 'invalid_message', 'UDID'],
      ['an empty UDID', { ...goodTokenUpdate, UDID: '' }, 'invalid_message', 'UDID'],
      ['neither UDID nor EnrollmentID', without(goodTokenUpdate, 'UDID'), 'invalid_message', 'UDID'],
      ['Token as a string', { ...goodTokenUpdate, Token: 'dIT1yrUX79Cg' }, 'invalid_message', 'Token'],
      ['an empty Token', { ...goodTokenUpdate, Token: new Uint8Array(0) }, 'invalid_message', 'Token'],
      ['a missing Token', without(goodTokenUpdate, 'Token'), 'invalid_message', 'Token'],
      ['a missing PushMagic', without(goodTokenUpdate, 'PushMagic'), 'invalid_message', 'PushMagic'],
      ['PushMagic as data', { ...goodTokenUpdate, PushMagic: TOKEN }, 'invalid_message', 'PushMagic'],
      ['UnlockToken as a string', { ...goodTokenUpdate, UnlockToken: 'x' }, 'invalid_message', 'UnlockToken'],
      [
        'AwaitingConfiguration as a string',
        { ...goodTokenUpdate, AwaitingConfiguration: 'false' },
        'invalid_message',
        'AwaitingConfiguration',
      ],
      ['UserID as an integer', { ...goodTokenUpdate, UserID: 501 }, 'invalid_message', 'UserID'],
      [
        'EnrollmentID as an array',
        { ...without(goodTokenUpdate, 'UDID'), EnrollmentID: [] },
        'invalid_message',
        'EnrollmentID',
      ],
      ['a TokenUpdate without Topic', without(goodTokenUpdate, 'Topic'), 'invalid_message', 'Topic'],
      [
        'an Authenticate without Topic',
        { MessageType: 'Authenticate', UDID: IPHONE },
        'invalid_message',
        'Topic',
      ],
      [
        'a Challenge that is not data',
        { MessageType: 'Authenticate', UDID: MAC, Topic: TOPIC, Challenge: 'apple' },
        'invalid_message',
        'Challenge',
      ],
      ['a CheckOut without Topic', { MessageType: 'CheckOut', UDID: MAC }, 'invalid_message', 'Topic'],
      [
        'a UserAuthenticate without UserID',
        { MessageType: 'UserAuthenticate', UDID: MAC },
        'invalid_message',
        'UserID',
      ],
      [
        'a DeclarativeManagement without Endpoint',
        { MessageType: 'DeclarativeManagement', UDID: MAC },
        'invalid_message',
        'Endpoint',
      ],
      [
        'a GetToken with TokenParameters as a string',
        { MessageType: 'GetToken', UDID: MAC, TokenServiceType: 'com.apple.maid', TokenParameters: 'x' },
        'invalid_message',
        'TokenParameters',
      ],
      [
        'a SetBootstrapToken with BootstrapToken as a string',
        { MessageType: 'SetBootstrapToken', UDID: MAC, BootstrapToken: 'x' },
        'invalid_message',
        'BootstrapToken',
      ],
    ];
    for (const [name, dict, code, field] of cases) {
      it(`${name} → ${code}${field ? ` (${field})` : ''}`, () => {
        expectProtocolError(() => parseCheckin(dict), code, field);
      });
    }

    it('a wrongly typed key in a decoded body', () => {
      const body = encodeCheckin({ ...goodTokenUpdate, UDID: 42 });
      expect(body).to.contain('<key>UDID</key>\n\t<integer>42</integer>');
      expectProtocolError(() => parseCheckin(decodePlistDict(body)), 'invalid_message', 'UDID');
    });
  });

  describe('encodeCheckin (for the simulator)', () => {
    it('round-trips through decodePlistDict and parseCheckin', () => {
      const msg = parseCheckin(
        decodePlistDict(encodeCheckin({ ...goodTokenUpdate, AwaitingConfiguration: true })),
      );
      expect(msg).to.deep.equal({ ...goodTokenUpdate, AwaitingConfiguration: true });
    });

    it('encodes messages the server will refuse, so the simulator can send them', () => {
      const dict = decodePlistDict(encodeCheckin({ MessageType: 'Bogus', UDID: 7 }));
      expect(dict).to.deep.equal({ MessageType: 'Bogus', UDID: 7 });
    });
  });
});
