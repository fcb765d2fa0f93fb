import { randomBytes } from 'node:crypto';

/**
 * What the registration page needs to know about a registration code. The invitations domain
 * implements `RegistrationTargets` over its usage rows; the page never sees the invitations model.
 */
export interface RegistrationTarget {
  /** The invited user (the one who must log in when `requireLogin`). */
  userId: string;
  username: string;
  invitationName: string;
  /** The organisation (the location's `organizationName`), shown on the page when known. */
  orgName: string | null;
  requireLogin: boolean;
  /** The user's Apple invitation URL; null while it is not known yet (the page asks to come back). */
  appleInvitationUrl: string | null;
  /** The user is registered at the invitation's location already. */
  alreadyRegistered: boolean;
}

export interface RegistrationTargets {
  /** Null for an unknown code, or one withdrawn with its invitation. */
  resolve(code: string): Promise<RegistrationTarget | null>;
  /** The user opened the link (after logging in, with `requireLogin`): usage `acknowledged`. */
  recordOpened(code: string): Promise<void>;
}

/** 32 random bytes (256 bits), base64url: 43 characters from `[A-Za-z0-9_-]`. */
export function newRegistrationCode(): string {
  return randomBytes(32).toString('base64url');
}

/** The shape the page accepts before any lookup (at least 16 characters of `[A-Za-z0-9_-]`, at most 128). */
export const REGISTRATION_CODE_PATTERN = /^[A-Za-z0-9_-]{16,128}$/;

export function registrationUrl(publicUrl: string, code: string): string {
  return `${publicUrl.replace(/\/+$/, '')}/register/${encodeURIComponent(code)}`;
}
