import type { ConnectionOptions } from 'node:tls';
import { Client, ResultCodeError, SizeLimitExceededError } from 'ldapts';
import { UpstreamError } from '../errors.ts';

/** The outcome of checking a username and password against an account source. */
export type PasswordCheck = { ok: true; dn: string; attributes: Record<string, string[]> } | { ok: false };

/** Checks a username and password. `{ ok: false }` means "not these credentials"; a source that cannot answer throws. */
export interface PasswordChecker {
  verify(username: string, password: string): Promise<PasswordCheck>;
}

/** The directory could not answer (down, timed out, misconfigured): an error to log, never a silent "no". */
export class LdapUnavailableError extends UpstreamError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('ldap_unavailable', message, options);
  }
}

export interface LdapSettings {
  /** `ldap://host[:port]` or `ldaps://host[:port]`. */
  url: string;
  /** Service account for the search; null searches anonymously. */
  bindDn: string | null;
  bindPassword: string | null;
  /** Where users are searched (whole subtree). */
  userBase: string;
  /** Contains `{{username}}`, replaced by the RFC 4515-escaped username, e.g. `(uid={{username}})`. */
  userFilter: string;
}

export interface LdapAuthenticatorOptions {
  /** TCP connect timeout (default 5 s) and per-operation timeout (default 10 s). */
  connectTimeoutMs?: number;
  operationTimeoutMs?: number;
  /** Attributes returned with a successful check (default uid, cn, mail, displayName). */
  attributes?: string[];
  /** Extra TLS options for `ldaps://` (Node's trust otherwise; `NODE_EXTRA_CA_CERTS` adds a private CA). */
  tls?: ConnectionOptions;
}

/** Longest username looked up (anything longer is simply not an account). */
export const MAX_USERNAME_LENGTH = 256;

/**
 * RFC 4515 escaping of an assertion value: `\`, `*`, `(`, `)` and NUL (plus the other control
 * characters, harmless but unreadable) become `\hh`. UTF-8 characters stay as they are.
 */
export function escapeFilterValue(value: string): string {
  return value.replace(
    /[\\*()\u0000-\u001f\u007f]/g,
    (c) => `\\${c.charCodeAt(0).toString(16).padStart(2, '0')}`,
  );
}

/** Result codes of a user's bind that mean "these credentials do not log in" rather than "the directory failed". */
const REFUSED_BIND = new Set([
  48, // inappropriateAuthentication
  49, // invalidCredentials (also locked or expired accounts on Active Directory)
  50, // insufficientAccessRights
  53, // unwillingToPerform (e.g. a disabled account, or unauthenticated binds refused)
]);

/**
 * Search-then-bind: bind as the service account, find exactly one entry under `userBase` matching
 * `userFilter`, then bind as that entry's DN with the password. Every connection is unbound.
 */
export class LdapAuthenticator implements PasswordChecker {
  private readonly attributes: string[];

  constructor(
    private readonly settings: LdapSettings,
    private readonly options: LdapAuthenticatorOptions = {},
  ) {
    if (!settings.userFilter.includes('{{username}}'))
      throw new Error('LDAP user filter must contain {{username}}');
    this.attributes = options.attributes ?? ['uid', 'cn', 'mail', 'displayName'];
  }

  private client(): Client {
    return new Client({
      url: this.settings.url,
      connectTimeout: this.options.connectTimeoutMs ?? 5_000,
      timeout: this.options.operationTimeoutMs ?? 10_000,
      ...(this.options.tls ? { tlsOptions: this.options.tls } : {}),
    });
  }

  filterFor(username: string): string {
    return this.settings.userFilter.split('{{username}}').join(escapeFilterValue(username));
  }

  async verify(username: string, password: string): Promise<PasswordCheck> {
    // An empty password would make a simple bind "unauthenticated", which many servers accept.
    if (password === '' || username === '' || username.length > MAX_USERNAME_LENGTH) return { ok: false };
    const entry = await this.find(username);
    if (!entry) return { ok: false };
    const client = this.client();
    try {
      await client.bind(entry.dn, password);
      return { ok: true, dn: entry.dn, attributes: entry.attributes };
    } catch (err) {
      if (err instanceof ResultCodeError && REFUSED_BIND.has(err.code)) return { ok: false };
      throw new LdapUnavailableError(`LDAP bind as the user failed: ${describe(err)}`, { cause: err });
    } finally {
      await client.unbind().catch(() => undefined);
    }
  }

  /** The single entry the filter finds for this username (null for none or several). */
  private async find(username: string): Promise<{ dn: string; attributes: Record<string, string[]> } | null> {
    const client = this.client();
    try {
      if (this.settings.bindDn) {
        try {
          await client.bind(this.settings.bindDn, this.settings.bindPassword ?? '');
        } catch (err) {
          throw new LdapUnavailableError(`LDAP service bind failed: ${describe(err)}`, { cause: err });
        }
      }
      let entries;
      try {
        ({ searchEntries: entries } = await client.search(this.settings.userBase, {
          scope: 'sub',
          filter: this.filterFor(username),
          attributes: this.attributes,
          sizeLimit: 2,
          derefAliases: 'never',
        }));
      } catch (err) {
        if (err instanceof SizeLimitExceededError) return null; // ambiguous: not one account
        throw new LdapUnavailableError(`LDAP search failed: ${describe(err)}`, { cause: err });
      }
      const [entry, ...more] = entries;
      if (!entry || more.length > 0) return null;
      const attributes: Record<string, string[]> = {};
      for (const [name, value] of Object.entries(entry)) {
        if (name === 'dn') continue;
        const values = Array.isArray(value) ? value : [value];
        attributes[name] = values.map((v) => (typeof v === 'string' ? v : v.toString('utf8')));
      }
      return { dn: entry.dn, attributes };
    } finally {
      await client.unbind().catch(() => undefined);
    }
  }
}

function describe(err: unknown): string {
  if (err instanceof ResultCodeError) return `${err.name} (${err.code}): ${err.message}`;
  if (err instanceof Error) return `${err.name}: ${err.message}`;
  return String(err);
}
