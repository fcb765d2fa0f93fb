export type PlistErrorCode = 'too_large' | 'too_deep' | 'forbidden_dtd' | 'malformed' | 'not_dict';

/** Any failure to decode (or encode) a property list. `code` is stable; `message` is for logs. */
export class PlistError extends Error {
  override readonly name = 'PlistError';
  readonly code: PlistErrorCode;

  constructor(code: PlistErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.code = code;
  }
}
