/**
 * The simulated service's records. The zod schemas are the single source of the types and validate the
 * optional state file when it is read back.
 */
import { z } from 'zod';

export const USER_STATUSES = ['Registered', 'Associated', 'Retired'] as const;
export type UserStatus = (typeof USER_STATUSES)[number];

/** Notification types Apple accepts in `client/config` (`TEST_NOTIFICATION` is always sent). */
export const NOTIFICATION_TYPES = [
  'TEST_NOTIFICATION',
  'ASSET_MANAGEMENT',
  'USER_MANAGEMENT',
  'USER_ASSOCIATED',
  'ASSET_COUNT',
  'SUBSCRIPTION_MANAGEMENT',
  'SUBSCRIPTION_COUNT',
  'UNLIMITED_ASSET',
] as const;
export type NotificationType = (typeof NOTIFICATION_TYPES)[number];

export const EVENT_TYPES = ['CREATE', 'UPDATE', 'RETIRE'] as const;
export type EventType = (typeof EVENT_TYPES)[number];

export const userRecordSchema = z.object({
  /** internal, unique per location, in creation order */
  seq: z.number().int().nonnegative(),
  clientUserId: z.string(),
  email: z.string().optional(),
  managedAppleId: z.string().optional(),
  status: z.enum(USER_STATUSES),
  inviteCode: z.string().optional(),
  idHash: z.string().optional(),
  /** the Apple ID that accepted (simulator-only; Apple never reveals it) */
  appleId: z.string().optional(),
  /** the location's version counter at this record's last change */
  version: z.number().int().nonnegative(),
  createdAt: z.number(),
  modifiedAt: z.number(),
  /** how many times the invitation was declined on the page (simulator-only) */
  declines: z.number().int().nonnegative(),
});
export type UserRecord = z.infer<typeof userRecordSchema>;

export const requestUserSchema = z.object({
  clientUserId: z.string(),
  email: z.string().optional(),
  managedAppleId: z.string().optional(),
});
export type RequestUser = z.infer<typeof requestUserSchema>;

export const failureRecordSchema = z.object({
  clientUserId: z.string(),
  errorNumber: z.number().int(),
  errorMessage: z.string(),
});
export type FailureRecord = z.infer<typeof failureRecordSchema>;

export const eventRecordSchema = z.object({
  eventId: z.string(),
  type: z.enum(EVENT_TYPES),
  eventStatus: z.enum(['PENDING', 'COMPLETE', 'FAILED']),
  users: z.array(requestUserSchema),
  numCompleted: z.number().int().nonnegative(),
  failures: z.array(failureRecordSchema),
  createdAt: z.number(),
  completedAt: z.number().optional(),
});
export type EventRecord = z.infer<typeof eventRecordSchema>;

export const mdmInfoSchema = z.object({ id: z.string(), name: z.string(), metadata: z.string() });
export type MdmInfo = z.infer<typeof mdmInfoSchema>;

export const clientConfigSchema = z.object({
  mdmInfo: mdmInfoSchema.optional(),
  notificationUrl: z.string().optional(),
  notificationAuthToken: z.string().optional(),
  notificationTypes: z.array(z.enum(NOTIFICATION_TYPES)),
});
export type ClientConfig = z.infer<typeof clientConfigSchema>;

export const locationRecordSchema = z.object({
  /** the `token` field inside the sToken: identifies the location */
  token: z.string(),
  uId: z.string(),
  orgName: z.string(),
  locationName: z.string(),
  countryISO2ACode: z.string(),
  /** Apple's format, `2030-11-08T22:33:22+0000` */
  expDate: z.string(),
  revoked: z.boolean(),
  websiteURL: z.string(),
  clientConfig: clientConfigSchema,
  /** bumped on every change to a user; users carry the value of their last change */
  version: z.number().int().nonnegative(),
  nextSeq: z.number().int().nonnegative(),
  users: z.array(userRecordSchema),
  events: z.array(eventRecordSchema),
});
export type LocationRecord = z.infer<typeof locationRecordSchema>;

export const notificationPayloadSchema = z.object({
  notificationId: z.string(),
  notificationType: z.enum(NOTIFICATION_TYPES),
  uId: z.string(),
  notification: z.record(z.string(), z.unknown()),
});
export type NotificationPayload = z.infer<typeof notificationPayloadSchema>;

export const pendingNotificationSchema = z.object({
  locationToken: z.string(),
  payload: notificationPayloadSchema,
  attempts: z.number().int().nonnegative(),
  createdAt: z.number(),
});
export type PendingNotification = z.infer<typeof pendingNotificationSchema>;

export const stateFileSchema = z.object({
  format: z.literal(1),
  locations: z.array(locationRecordSchema),
  pendingNotifications: z.array(pendingNotificationSchema),
});
export type StateFile = z.infer<typeof stateFileSchema>;

/** What a location's user looks like in Apple's responses and notifications (`ResponseUser`). */
export interface ResponseUser {
  clientUserId: string;
  email?: string;
  inviteCode?: string;
  idHash?: string;
  status: UserStatus;
}

export function presentUser(u: UserRecord): ResponseUser {
  return {
    clientUserId: u.clientUserId,
    ...(u.email !== undefined ? { email: u.email } : {}),
    ...(u.inviteCode !== undefined && u.status !== 'Retired' ? { inviteCode: u.inviteCode } : {}),
    ...(u.idHash !== undefined ? { idHash: u.idHash } : {}),
    status: u.status,
  };
}
