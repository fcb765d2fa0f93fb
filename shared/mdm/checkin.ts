import { z } from 'zod';
import { encodePlist, isPlistDict } from '../plist/index.ts';
import type { PlistDict, PlistValue } from '../plist/index.ts';
import { ProtocolError } from './protocol-error.ts';
import { invalidMessage } from './zod-issues.ts';

/*
 * Check-in messages (PUT CheckInURL), one schema per MessageType, keys as Apple names them
 * (../../../shared/vectors/apple-schema/mdm__checkin__*.yaml). Unknown keys pass through.
 */

const text = z.string();
/** Identifiers and other keys that mean nothing when empty. */
const nonEmpty = z.string().min(1);
const data = z.instanceof(Uint8Array);
const plistDict = z.custom<PlistDict>(isPlistDict, 'expected a dictionary');

/** Keys any check-in may carry to say which device, enrollment and user channel it comes from. */
const channelKeys = {
  UDID: nonEmpty.optional(),
  EnrollmentID: nonEmpty.optional(),
  EnrollmentUserID: nonEmpty.optional(),
  Topic: text.optional(),
  UserID: nonEmpty.optional(),
  UserShortName: text.optional(),
  UserLongName: text.optional(),
};

export const authenticateSchema = z.looseObject({
  ...channelKeys,
  MessageType: z.literal('Authenticate'),
  Topic: nonEmpty,
  OSVersion: text.optional(),
  BuildVersion: text.optional(),
  ProductName: text.optional(),
  SerialNumber: text.optional(),
  DeviceName: text.optional(),
  Model: text.optional(),
  ModelName: text.optional(),
  IMEI: text.optional(),
  MEID: text.optional(),
  Challenge: data.optional(),
});

export const tokenUpdateSchema = z.looseObject({
  ...channelKeys,
  MessageType: z.literal('TokenUpdate'),
  Topic: nonEmpty,
  Token: data.refine((token) => token.byteLength > 0, 'empty push token'),
  PushMagic: nonEmpty,
  UnlockToken: data.optional(),
  AwaitingConfiguration: z.boolean().optional(),
  NotOnConsole: z.boolean().optional(),
});

export const checkOutSchema = z.looseObject({
  ...channelKeys,
  MessageType: z.literal('CheckOut'),
  Topic: nonEmpty,
});

export const userAuthenticateSchema = z.looseObject({
  ...channelKeys,
  MessageType: z.literal('UserAuthenticate'),
  UserID: nonEmpty,
  DigestResponse: text.optional(),
});

export const getBootstrapTokenSchema = z.looseObject({
  ...channelKeys,
  MessageType: z.literal('GetBootstrapToken'),
  AwaitingConfiguration: z.boolean().optional(),
});

export const setBootstrapTokenSchema = z.looseObject({
  ...channelKeys,
  MessageType: z.literal('SetBootstrapToken'),
  /** Missing or empty: remove the stored bootstrap token. */
  BootstrapToken: data.optional(),
  AwaitingConfiguration: z.boolean().optional(),
});

export const declarativeManagementSchema = z.looseObject({
  ...channelKeys,
  MessageType: z.literal('DeclarativeManagement'),
  /** `tokens`, `declaration-items`, `status` or `declaration/<type>/<identifier>`. */
  Endpoint: nonEmpty,
  Data: data.optional(),
});

export const getTokenSchema = z.looseObject({
  ...channelKeys,
  MessageType: z.literal('GetToken'),
  TokenServiceType: nonEmpty,
  TokenParameters: plistDict.optional(),
});

export const checkinSchema = z.discriminatedUnion('MessageType', [
  authenticateSchema,
  tokenUpdateSchema,
  checkOutSchema,
  userAuthenticateSchema,
  getBootstrapTokenSchema,
  setBootstrapTokenSchema,
  declarativeManagementSchema,
  getTokenSchema,
]);

export type AuthenticateMessage = z.output<typeof authenticateSchema>;
export type TokenUpdateMessage = z.output<typeof tokenUpdateSchema>;
export type CheckOutMessage = z.output<typeof checkOutSchema>;
export type UserAuthenticateMessage = z.output<typeof userAuthenticateSchema>;
export type GetBootstrapTokenMessage = z.output<typeof getBootstrapTokenSchema>;
export type SetBootstrapTokenMessage = z.output<typeof setBootstrapTokenSchema>;
export type DeclarativeManagementMessage = z.output<typeof declarativeManagementSchema>;
export type GetTokenMessage = z.output<typeof getTokenSchema>;
export type CheckinMessage =
  | AuthenticateMessage
  | TokenUpdateMessage
  | CheckOutMessage
  | UserAuthenticateMessage
  | GetBootstrapTokenMessage
  | SetBootstrapTokenMessage
  | DeclarativeManagementMessage
  | GetTokenMessage;
export type CheckinMessageType = CheckinMessage['MessageType'];

export const CHECKIN_MESSAGE_TYPES: readonly CheckinMessageType[] = Object.freeze([
  'Authenticate',
  'TokenUpdate',
  'CheckOut',
  'UserAuthenticate',
  'GetBootstrapToken',
  'SetBootstrapToken',
  'DeclarativeManagement',
  'GetToken',
]);

function isCheckinMessageType(value: PlistValue | undefined): value is CheckinMessageType {
  return typeof value === 'string' && (CHECKIN_MESSAGE_TYPES as readonly string[]).includes(value);
}

/**
 * Validates a decoded check-in body. Throws ProtocolError: `unknown_message_type` when MessageType
 * is missing or not one of Apple's; `invalid_message` (with `field`) when a key has the wrong type,
 * a required key is missing, or neither `UDID` nor `EnrollmentID` names the device.
 */
export function parseCheckin(dict: PlistDict): CheckinMessage {
  const type = dict['MessageType'];
  if (!isCheckinMessageType(type)) {
    const shown =
      typeof type === 'string' ? `"${type.slice(0, 64)}"` : type === undefined ? 'missing' : typeof type;
    throw new ProtocolError('unknown_message_type', `check-in MessageType ${shown} is not supported`, {
      field: 'MessageType',
    });
  }
  const result = checkinSchema.safeParse(dict);
  if (!result.success) throw invalidMessage(type, result.error);
  const msg = result.data;
  if (msg.UDID === undefined && msg.EnrollmentID === undefined) {
    throw new ProtocolError('invalid_message', `${type}: neither UDID nor EnrollmentID names the device`, {
      field: 'UDID',
    });
  }
  return msg;
}

/** A check-in body as a device sends it (for the simulator); no validation, so it can send bad ones. */
export function encodeCheckin(msg: Record<string, PlistValue> & { MessageType: string }): string {
  return encodePlist(msg);
}
