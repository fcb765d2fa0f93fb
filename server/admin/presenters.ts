import { decodePlistDict } from '../../shared/plist/index.ts';
import type { Device, Enrollment } from '../checkin/store.ts';
import type { CommandRecord } from '../commands/store.ts';
import { plistToJson, type Json } from '../commands/plist-json.ts';
import type { EnrollmentToken } from '../enrollment/store.ts';

const iso = (d: Date | null) => (d ? d.toISOString() : null);

export function presentDevice(device: Device, enrollments: Enrollment[]) {
  return {
    udid: device.udid,
    platform: device.platform,
    osVersion: device.osVersion,
    buildVersion: device.buildVersion,
    model: device.model,
    serialNumber: device.serialNumber,
    deviceName: device.deviceName,
    userEnrollment: device.userEnrollment,
    enrolled: device.enrolled,
    enrolledAt: iso(device.enrolledAt),
    checkedOutAt: iso(device.checkedOutAt),
    lastSeenAt: iso(device.lastSeenAt),
    userId: device.userId,
    channels: enrollments.map((e) => ({
      enrollmentId: e.id,
      channel: e.channel,
      ...(e.appleUserId ? { userId: e.appleUserId } : {}),
      ...(e.userShortName ? { userShortName: e.userShortName } : {}),
      enabled: e.enabled,
    })),
  };
}

export function presentToken(token: EnrollmentToken, enrollUrl: string) {
  return {
    token: token.token,
    enrollUrl,
    expiresAt: iso(token.expiresAt),
    maxUses: token.maxUses,
    uses: token.uses,
    siteId: token.siteId,
    createdAt: iso(token.createdAt),
  };
}

export function presentCommand(c: CommandRecord) {
  let result: Json | undefined;
  if (c.resultXml) {
    try {
      result = plistToJson(decodePlistDict(c.resultXml));
    } catch {
      result = undefined;
    }
  }
  return {
    commandUuid: c.commandUuid,
    requestType: c.requestType,
    enrollmentId: c.enrollmentId,
    status: c.status,
    queuedAt: c.queuedAt.toISOString(),
    answeredAt: iso(c.answeredAt),
    ...(result !== undefined ? { result } : {}),
  };
}
