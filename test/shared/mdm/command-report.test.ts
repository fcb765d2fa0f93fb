import { expect } from 'chai';
import {
  COMMAND_STATUSES,
  encodeCommandReport,
  parseCommandReport,
  ProtocolError,
  resolveEnrollment,
  SHARED_IPAD_USER_ID,
} from '../../../shared/mdm/index.ts';
import type { CommandReport, CommandStatus, EnrollmentRef } from '../../../shared/mdm/index.ts';
import { decodePlistDict } from '../../../shared/plist/index.ts';
import type { PlistDict } from '../../../shared/plist/index.ts';
import { readFixture } from '../plist/test-files.ts';

const IPHONE = '00008110-000C2D5A1E38801E';
const MAC = '578C3494-731F-4BBB-A426-ABEF9488F698';
const IPAD = '00008103-001E4C2A0C91001E';
const ENROLLMENT_ID = 'BEE7EE72-20E3-490E-815C-2D17CC14F3E6';

function report(file: string): CommandReport {
  return parseCommandReport(decodePlistDict(readFixture(`report/${file}`)));
}

interface FixtureCase {
  file: string;
  status: CommandStatus;
  commandUuid: string | undefined;
  enrollment: EnrollmentRef;
  check?: (r: CommandReport) => void;
}

const fixtures: FixtureCase[] = [
  {
    file: 'idle.plist',
    status: 'Idle',
    commandUuid: undefined,
    enrollment: { id: IPHONE, deviceId: IPHONE, channel: 'device' },
  },
  {
    file: 'idle.user-enrollment.plist',
    status: 'Idle',
    commandUuid: undefined,
    enrollment: { id: ENROLLMENT_ID, deviceId: ENROLLMENT_ID, channel: 'user_enrollment_device' },
  },
  {
    file: 'acknowledged.device-information.plist',
    status: 'Acknowledged',
    commandUuid: '9d4b3e0a-51c2-4f7e-9a61-0c8e2f5b7d13',
    enrollment: { id: IPHONE, deviceId: IPHONE, channel: 'device' },
    check: (r) => {
      expect(r.raw['RequestType']).to.equal('DeviceInformation');
      expect(r.raw['QueryResponses']).to.deep.include({
        DeviceName: 'Ayesha’s iPhone',
        iTunesStoreAccountIsActive: true,
        iTunesStoreAccountHash: 'Zm9vYmFyMTIzNDU2Nzg5MA==',
        BatteryLevel: 0.85000002384185791,
      });
    },
  },
  {
    file: 'acknowledged.invite-to-program.macos-user.plist',
    status: 'Acknowledged',
    commandUuid: 'c2f0a7de-3b19-4e55-86a4-7d1e9b0f4a62',
    enrollment: {
      id: `${MAC}:1B2B5A4B-45DB-4E85-8BB0-3E6EA28A89C4`,
      deviceId: MAC,
      channel: 'user',
      userId: '1B2B5A4B-45DB-4E85-8BB0-3E6EA28A89C4',
      userShortName: 'rkumar',
    },
    check: (r) => {
      expect(r.raw['InvitationResult']).to.equal('Acknowledged');
      expect(r.UserLongName).to.equal('Ravi Kumar');
    },
  },
  {
    file: 'error.plist',
    status: 'Error',
    commandUuid: '5e8a1c3f-0b7d-4a92-b6e4-13f9c2d8a075',
    enrollment: { id: IPHONE, deviceId: IPHONE, channel: 'device' },
    check: (r) => {
      expect(r.ErrorChain).to.deep.equal([
        {
          ErrorCode: 12021,
          ErrorDomain: 'MCMDMErrorDomain',
          LocalizedDescription: 'Invalid request type.',
          USEnglishDescription: 'Invalid request type.',
        },
        { ErrorCode: -1, ErrorDomain: 'NSPOSIXErrorDomain' },
      ]);
    },
  },
  {
    file: 'not-now.plist',
    status: 'NotNow',
    commandUuid: 'e17b6f90-2c4d-4d38-a5b1-8f60e3a9c2d4',
    enrollment: {
      id: `${IPAD}:ayesha.ono@students.example.edu`,
      deviceId: IPAD,
      channel: 'shared_ipad_user',
      userId: SHARED_IPAD_USER_ID,
      userShortName: 'ayesha.ono@students.example.edu',
    },
  },
  {
    file: 'command-format-error.plist',
    status: 'CommandFormatError',
    commandUuid: '0f3c9a27-6e1b-4b85-9d70-a4c2e8f1b536',
    enrollment: { id: IPHONE, deviceId: IPHONE, channel: 'device' },
  },
];

describe('parseCommandReport', () => {
  describe('fixtures', () => {
    for (const { file, status, commandUuid, enrollment, check } of fixtures) {
      it(`${file} → ${status}`, () => {
        const r = report(file);
        expect(r.Status).to.equal(status);
        expect(r.CommandUUID).to.equal(commandUuid);
        expect(resolveEnrollment(r)).to.deep.equal(enrollment);
        check?.(r);
      });
    }

    it('covers every status', () => {
      const statuses = new Set(fixtures.map(({ file }) => report(file).Status));
      expect([...statuses].sort()).to.deep.equal([...COMMAND_STATUSES].sort());
    });
  });

  it('returns the known keys that are present, and the whole body as raw', () => {
    const dict: PlistDict = {
      UDID: IPHONE,
      Status: 'Acknowledged',
      CommandUUID: 'u-1',
      RequestType: 'X',
      Extra: [1],
    };
    const r = parseCommandReport(dict);
    expect(r).to.deep.equal({ UDID: IPHONE, Status: 'Acknowledged', CommandUUID: 'u-1', raw: dict });
    expect(r.raw).to.equal(dict);
  });

  it('accepts a CommandUUID with Idle', () => {
    expect(parseCommandReport({ UDID: IPHONE, Status: 'Idle', CommandUUID: 'u-2' }).CommandUUID).to.equal(
      'u-2',
    );
  });

  describe('refuses', () => {
    const base: PlistDict = { UDID: IPHONE, Status: 'Acknowledged', CommandUUID: 'u-3' };
    const cases: [string, PlistDict, string][] = [
      ['Acknowledged without CommandUUID', { UDID: IPHONE, Status: 'Acknowledged' }, 'CommandUUID'],
      ['Error without CommandUUID', { UDID: IPHONE, Status: 'Error' }, 'CommandUUID'],
      ['NotNow without CommandUUID', { UDID: IPHONE, Status: 'NotNow' }, 'CommandUUID'],
      ['an empty CommandUUID', { ...base, CommandUUID: '' }, 'CommandUUID'],
      ['CommandUUID as an integer', { ...base, CommandUUID: 7 }, 'CommandUUID'],
      ['an unknown Status', { ...base, Status: 'Done' }, 'Status'],
      ['a lower-case Status', { ...base, Status: 'idle' }, 'Status'],
      ['a missing Status', { UDID: IPHONE, CommandUUID: 'u-4' }, 'Status'],
      ['Status as a boolean', { ...base, Status: true }, 'Status'],
      ['no UDID nor EnrollmentID', { Status: 'Idle' }, 'UDID'],
      ['UDID as an integer', { ...base, UDID: 1 }, 'UDID'],
      ['ErrorChain that is not an array', { ...base, Status: 'Error', ErrorChain: 'boom' }, 'ErrorChain'],
      [
        'an ErrorChain item with ErrorCode as a string',
        { ...base, Status: 'Error', ErrorChain: [{ ErrorCode: '12021', ErrorDomain: 'MCMDMErrorDomain' }] },
        'ErrorChain.0.ErrorCode',
      ],
      [
        'an ErrorChain item without ErrorDomain',
        { ...base, Status: 'Error', ErrorChain: [{ ErrorCode: 1, ErrorDomain: 'D' }, { ErrorCode: 2 }] },
        'ErrorChain.1.ErrorDomain',
      ],
    ];
    for (const [name, dict, field] of cases) {
      it(`${name} → invalid_message (${field})`, () => {
        let caught: unknown;
        try {
          parseCommandReport(dict);
        } catch (err) {
          caught = err;
        }
        expect(caught).to.be.instanceOf(ProtocolError);
        expect((caught as ProtocolError).code).to.equal('invalid_message');
        expect((caught as ProtocolError).field).to.equal(field);
      });
    }
  });

  describe('encodeCommandReport (for the simulator)', () => {
    it('round-trips through decodePlistDict and parseCommandReport', () => {
      const sent = {
        UDID: MAC,
        UserID: '1B2B5A4B-45DB-4E85-8BB0-3E6EA28A89C4',
        Status: 'Error' as const,
        CommandUUID: 'u-5',
        ErrorChain: [{ ErrorCode: 12021, ErrorDomain: 'MCMDMErrorDomain', LocalizedDescription: 'No.' }],
      };
      const r = parseCommandReport(decodePlistDict(encodeCommandReport(sent)));
      expect(r).to.deep.equal({ ...sent, raw: sent });
    });
  });
});
