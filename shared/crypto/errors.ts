export type SignatureErrorCode =
  'malformed' | 'no_signer' | 'digest_mismatch' | 'bad_signature' | 'unsupported_algorithm';

/** A CMS signature that cannot be accepted; `code` is stable and machine-readable. */
export class SignatureError extends Error {
  readonly code: SignatureErrorCode;
  constructor(code: SignatureErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'SignatureError';
    this.code = code;
  }
}

export type CertificateErrorCode = 'untrusted' | 'expired' | 'not_yet_valid' | 'malformed';

/** A certificate that does not chain, is outside its validity, or cannot be read. */
export class CertificateError extends Error {
  readonly code: CertificateErrorCode;
  constructor(code: CertificateErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'CertificateError';
    this.code = code;
  }
}
