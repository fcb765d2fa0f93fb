export {
  authenticateSchema,
  checkinSchema,
  checkOutSchema,
  CHECKIN_MESSAGE_TYPES,
  declarativeManagementSchema,
  encodeCheckin,
  getBootstrapTokenSchema,
  getTokenSchema,
  parseCheckin,
  setBootstrapTokenSchema,
  tokenUpdateSchema,
  userAuthenticateSchema,
} from './checkin.ts';
export type {
  AuthenticateMessage,
  CheckinMessage,
  CheckinMessageType,
  CheckOutMessage,
  DeclarativeManagementMessage,
  GetBootstrapTokenMessage,
  GetTokenMessage,
  SetBootstrapTokenMessage,
  TokenUpdateMessage,
  UserAuthenticateMessage,
} from './checkin.ts';
export { decodeCommand, encodeCommand } from './command.ts';
export type { CommandEnvelope, CommandPayload } from './command.ts';
export { COMMAND_STATUSES, encodeCommandReport, parseCommandReport } from './command-report.ts';
export type { CommandReport, CommandStatus, ErrorChainItem } from './command-report.ts';
export { resolveEnrollment, SHARED_IPAD_USER_ID } from './enrollment.ts';
export type { ChannelKeys, ChannelType, EnrollmentRef } from './enrollment.ts';
export { ProtocolError } from './protocol-error.ts';
export type { ProtocolErrorCode } from './protocol-error.ts';
