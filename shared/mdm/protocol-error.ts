export type ProtocolErrorCode = 'unknown_message_type' | 'invalid_message';

/**
 * A well-formed plist that is not a valid MDM message. `field` is the path to the offending key
 * (`UDID`, `Token`, `ErrorChain.0.ErrorCode`) when one is to blame.
 */
export class ProtocolError extends Error {
  override readonly name = 'ProtocolError';
  readonly code: ProtocolErrorCode;
  readonly field?: string;

  constructor(code: ProtocolErrorCode, message: string, options?: { field?: string; cause?: unknown }) {
    super(message, options);
    this.code = code;
    if (options?.field !== undefined) this.field = options.field;
  }
}
