import { ProtocolError } from './protocol-error.ts';

/** The `UserID` a Shared iPad sends on its user channel: no user authentication takes place. */
export const SHARED_IPAD_USER_ID = 'FFFFFFFF-FFFF-FFFF-FFFF-FFFFFFFFFFFF';

export type ChannelType =
  'device' | 'user' | 'shared_ipad_user' | 'user_enrollment_device' | 'user_enrollment_user';

export interface EnrollmentRef {
  /** Key of the enrollment (one per channel): what commands are queued for and pushes go to. */
  id: string;
  /** The device: its UDID, or its EnrollmentID under User Enrollment. */
  deviceId: string;
  channel: ChannelType;
  userId?: string;
  userShortName?: string;
}

/** The keys of a check-in or report that say which channel it comes from. */
export interface ChannelKeys {
  UDID?: string;
  EnrollmentID?: string;
  EnrollmentUserID?: string;
  UserID?: string;
  UserShortName?: string;
}

/**
 * Which enrollment a message belongs to:
 * - device channel: `UDID`;
 * - macOS user channel (`UserID`): `UDID:UserID`;
 * - Shared iPad user (`UserID` = SHARED_IPAD_USER_ID): `UDID:UserShortName`;
 * - User Enrollment (no UDID): `EnrollmentID`, and `EnrollmentID:EnrollmentUserID` for its user.
 * Empty strings count as absent. Throws ProtocolError `invalid_message` when no device is named
 * (field `UDID`) or a Shared iPad user has no `UserShortName`.
 */
export function resolveEnrollment(msg: ChannelKeys): EnrollmentRef {
  const udid = present(msg.UDID);
  const userShortName = present(msg.UserShortName);
  if (udid !== undefined) {
    const userId = present(msg.UserID);
    if (userId === undefined) return { id: udid, deviceId: udid, channel: 'device' };
    if (userId === SHARED_IPAD_USER_ID) {
      if (userShortName === undefined) {
        throw new ProtocolError('invalid_message', 'Shared iPad user channel without UserShortName', {
          field: 'UserShortName',
        });
      }
      return {
        id: `${udid}:${userShortName}`,
        deviceId: udid,
        channel: 'shared_ipad_user',
        userId,
        userShortName,
      };
    }
    return withShortName({ id: `${udid}:${userId}`, deviceId: udid, channel: 'user', userId }, userShortName);
  }
  const enrollmentId = present(msg.EnrollmentID);
  if (enrollmentId === undefined) {
    throw new ProtocolError('invalid_message', 'neither UDID nor EnrollmentID names the device', {
      field: 'UDID',
    });
  }
  const enrollmentUserId = present(msg.EnrollmentUserID);
  if (enrollmentUserId === undefined) {
    return { id: enrollmentId, deviceId: enrollmentId, channel: 'user_enrollment_device' };
  }
  return withShortName(
    {
      id: `${enrollmentId}:${enrollmentUserId}`,
      deviceId: enrollmentId,
      channel: 'user_enrollment_user',
      userId: enrollmentUserId,
    },
    userShortName,
  );
}

function present(value: string | undefined): string | undefined {
  return value === undefined || value === '' ? undefined : value;
}

function withShortName(ref: EnrollmentRef, userShortName: string | undefined): EnrollmentRef {
  return userShortName === undefined ? ref : { ...ref, userShortName };
}
