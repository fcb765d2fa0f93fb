import { expect } from 'chai';
import { ProtocolError, resolveEnrollment, SHARED_IPAD_USER_ID } from '../../../shared/mdm/index.ts';
import type { ChannelKeys, EnrollmentRef } from '../../../shared/mdm/index.ts';

const UDID = '84AA9B62-C1CB-4C10-87F1-AC43F476DF69';
const USER = 'B065936C-FDD4-4894-BA64-5BAAD5D41126';
const EID = '35953F5C-07DC-4149-99BF-6C35E3D63C7C';
const EUID = '671C0CE7-5035-42D6-884F-932D058E4AEE';

describe('resolveEnrollment', () => {
  it('SHARED_IPAD_USER_ID is all F', () => {
    expect(SHARED_IPAD_USER_ID).to.equal('FFFFFFFF-FFFF-FFFF-FFFF-FFFFFFFFFFFF');
  });

  const cases: [string, ChannelKeys, EnrollmentRef][] = [
    ['device channel', { UDID }, { id: UDID, deviceId: UDID, channel: 'device' }],
    [
      'device channel, UserShortName alone does not make a user channel',
      { UDID, UserShortName: 'x' },
      { id: UDID, deviceId: UDID, channel: 'device' },
    ],
    [
      'macOS user channel',
      { UDID, UserID: USER },
      { id: `${UDID}:${USER}`, deviceId: UDID, channel: 'user', userId: USER },
    ],
    [
      'macOS user channel with its short name',
      { UDID, UserID: USER, UserShortName: 'rkumar' },
      { id: `${UDID}:${USER}`, deviceId: UDID, channel: 'user', userId: USER, userShortName: 'rkumar' },
    ],
    [
      'Shared iPad user channel, keyed by the short name',
      { UDID, UserID: SHARED_IPAD_USER_ID, UserShortName: 'ayesha@school.example' },
      {
        id: `${UDID}:ayesha@school.example`,
        deviceId: UDID,
        channel: 'shared_ipad_user',
        userId: SHARED_IPAD_USER_ID,
        userShortName: 'ayesha@school.example',
      },
    ],
    [
      'User Enrollment, device channel',
      { EnrollmentID: EID },
      { id: EID, deviceId: EID, channel: 'user_enrollment_device' },
    ],
    [
      'User Enrollment, user channel',
      { EnrollmentID: EID, EnrollmentUserID: EUID, UserShortName: 'mlee' },
      {
        id: `${EID}:${EUID}`,
        deviceId: EID,
        channel: 'user_enrollment_user',
        userId: EUID,
        userShortName: 'mlee',
      },
    ],
    [
      'UDID wins over EnrollmentID',
      { UDID, EnrollmentID: EID },
      { id: UDID, deviceId: UDID, channel: 'device' },
    ],
    [
      'an empty UDID counts as absent',
      { UDID: '', EnrollmentID: EID },
      { id: EID, deviceId: EID, channel: 'user_enrollment_device' },
    ],
    [
      'an empty UserID counts as absent',
      { UDID, UserID: '' },
      { id: UDID, deviceId: UDID, channel: 'device' },
    ],
    [
      'an empty EnrollmentUserID counts as absent',
      { EnrollmentID: EID, EnrollmentUserID: '' },
      { id: EID, deviceId: EID, channel: 'user_enrollment_device' },
    ],
  ];
  for (const [name, msg, expected] of cases) {
    it(`${name} → ${expected.id}`, () => {
      expect(resolveEnrollment(msg)).to.deep.equal(expected);
    });
  }

  const bad: [string, ChannelKeys, string][] = [
    ['no UDID nor EnrollmentID', {}, 'UDID'],
    ['only a user', { UserID: USER, EnrollmentUserID: EUID }, 'UDID'],
    ['empty identifiers', { UDID: '', EnrollmentID: '' }, 'UDID'],
    ['a Shared iPad user without UserShortName', { UDID, UserID: SHARED_IPAD_USER_ID }, 'UserShortName'],
    [
      'a Shared iPad user with an empty UserShortName',
      { UDID, UserID: SHARED_IPAD_USER_ID, UserShortName: '' },
      'UserShortName',
    ],
  ];
  for (const [name, msg, field] of bad) {
    it(`refuses ${name} → invalid_message (${field})`, () => {
      expect(() => resolveEnrollment(msg))
        .to.throw(ProtocolError)
        .that.deep.includes({ code: 'invalid_message', field });
    });
  }
});
