export { SignatureError, CertificateError } from './errors.ts';
export type { SignatureErrorCode, CertificateErrorCode } from './errors.ts';
export { signDetached, signAttached, extractAttachedContent, verifyDetached, fingerprint } from './cms.ts';
export type { SignOptions, VerifiedSigner } from './cms.ts';
export {
  generateKeyPair,
  createCaCertificate,
  issueCertificate,
  verifyIssuedBy,
  pushTopicOf,
  certificateNotAfter,
  OID_APNS_DEVELOPMENT,
  OID_APNS_PRODUCTION,
} from './certificates.ts';
export type { SubjectFields, CertificateKind, IssueCertificateOptions } from './certificates.ts';
export { makePkcs12, readPkcs12 } from './pkcs12.ts';
export type { MakePkcs12Options } from './pkcs12.ts';
