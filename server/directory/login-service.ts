import { AppError } from '../errors.ts';
import type { Logger } from '../log.ts';
import type { PasswordChecker } from './ldap-authenticator.ts';
import type { LocalPasswordChecker } from './local-password-checker.ts';

/** The user an invitation link was made for. */
export interface InvitedUser {
  id: string;
  username: string;
}

export interface LoginAttempt {
  username: string;
  password: string;
}

export type LoginResult = { ok: true; method: 'ldap' | 'local' } | { ok: false };

/** What the registration page needs: "are these the invited user's credentials?" */
export interface LoginVerifier {
  /** Throws `LoginUnavailableError` when the answer cannot be known (the directory is down). */
  login(invited: InvitedUser, attempt: LoginAttempt): Promise<LoginResult>;
}

/** No account source could answer (LDAP down and no local success). */
export class LoginUnavailableError extends AppError {
  constructor(options?: { cause?: unknown }) {
    super(503, 'login_unavailable', 'sign-in is temporarily unavailable', undefined, options);
  }
}

export interface LoginServiceDeps {
  /** The LDAP directory (`MDM_LDAP_URL`), or null when not configured. */
  ldap: PasswordChecker | null;
  /** Local accounts (scrypt hashes in the users table), or null to disable them. */
  local: LocalPasswordChecker | null;
  log?: Logger;
  /** A failed login takes at least this long (default 300 ms), hiding which check failed. */
  minFailureMs?: number;
}

function normaliseUsername(username: string): string {
  return username.normalize('NFC').trim().toLowerCase();
}

/**
 * Logs in the invited user on the registration page: right only when the credentials are right
 * AND they are the invited user's: a local account's own password (with the invited username), or
 * an LDAP account whose username is the invited user's (case-insensitively). Every check runs
 * whatever the username, and failures are padded to a floor, so neither the answer nor its timing
 * tells which part was wrong.
 */
export class LoginService implements LoginVerifier {
  constructor(private readonly deps: LoginServiceDeps) {}

  async login(invited: InvitedUser, attempt: LoginAttempt): Promise<LoginResult> {
    const started = performance.now();
    const username = attempt.username.normalize('NFC').trim();
    const sameUser = normaliseUsername(username) === normaliseUsername(invited.username);
    let failure: unknown = null;

    if (this.deps.local) {
      const ok = await this.deps.local.verifyUserPassword(invited.id, attempt.password);
      if (ok && sameUser) return { ok: true, method: 'local' };
    }
    if (this.deps.ldap) {
      try {
        const check = await this.deps.ldap.verify(username, attempt.password);
        if (check.ok && sameUser) return { ok: true, method: 'ldap' };
        if (check.ok)
          this.deps.log?.info({ userId: invited.id }, 'registration login with another LDAP account');
      } catch (err) {
        failure = err;
      }
    }

    const wait = (this.deps.minFailureMs ?? 300) - (performance.now() - started);
    if (wait > 0) await new Promise((resolve) => setTimeout(resolve, wait));
    if (failure !== null) {
      this.deps.log?.error({ err: failure, userId: invited.id }, 'registration login: LDAP unavailable');
      throw new LoginUnavailableError({ cause: failure });
    }
    return { ok: false };
  }
}
