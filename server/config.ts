import path from 'node:path';
import { z } from 'zod';

export const APPLE_APNS_URL = 'https://api.push.apple.com';
export const APPLE_VPP_URL = 'https://vpp.itunes.apple.com/mdm/v2';
export const SIMULATOR_APNS_URL = 'https://127.0.0.1:2197';
export const SIMULATOR_VPP_URL = 'https://127.0.0.1:8444/mdm/v2';

const bool = z
  .enum(['1', '0', 'true', 'false', 'yes', 'no', 'on', 'off'])
  .transform((v) => ['1', 'true', 'yes', 'on'].includes(v));

const url = (protocols: string[]) =>
  z.string().refine(
    (v) => {
      try {
        return protocols.includes(new URL(v).protocol);
      } catch {
        return false;
      }
    },
    { message: `must be a URL (${protocols.join(', ')})` },
  );

const envSchema = z.object({
  MDM_ENV: z.enum(['development', 'production']).default('development'),
  MDM_HOST: z.string().min(1).default('0.0.0.0'),
  MDM_PORT: z.coerce.number().int().min(0).max(65535).default(8443),
  MDM_PUBLIC_URL: url(['https:', 'http:']).optional(),
  MDM_DATA_DIR: z.string().min(1).default('./data'),
  MDM_DATABASE_URL: z
    .string()
    .regex(/^(sqlite:|postgres:\/\/|postgresql:\/\/|mariadb:\/\/|mysql:\/\/)/, {
      message: 'must start with sqlite:, postgres://, or mariadb://',
    })
    .optional(),
  // A bearer token is `\S+`: any length (shorter than 16 characters only warns, see `configWarnings`).
  MDM_ADMIN_TOKEN: z.string().regex(/^\S+$/, { message: 'must not contain whitespace' }).optional(),
  // 64 hex characters are the key itself; any other string is a passphrase the key is derived from.
  // Trimmed: a stray newline must not turn a 64-hex key into a passphrase (another key).
  MDM_SECRET_KEY: z.string().trim().min(1, { message: 'must not be empty' }).optional(),
  MDM_APNS_URL: url(['https:']).optional(),
  MDM_VPP_URL: url(['https:', 'http:']).optional(),
  MDM_SMTP_URL: url(['smtp:', 'smtps:']).optional(),
  MDM_MAIL_FROM: z.string().email().optional(),
  MDM_MAIL_RATE: z.coerce.number().min(0.01).max(1000).default(5),
  MDM_LDAP_URL: url(['ldap:', 'ldaps:']).optional(),
  MDM_LDAP_BIND_DN: z.string().optional(),
  MDM_LDAP_BIND_PASSWORD: z.string().optional(),
  MDM_LDAP_USER_BASE: z.string().optional(),
  MDM_LDAP_USER_FILTER: z.string().default('(uid={{username}})'),
  MDM_TRUST_PROXY_CERT_HEADER: bool.default(false),
  MDM_TLS_CERT_FILE: z.string().optional(),
  MDM_TLS_KEY_FILE: z.string().optional(),
  MDM_DEVICE_CA_CERT_FILE: z.string().optional(),
  MDM_DEVICE_CA_KEY_FILE: z.string().optional(),
  MDM_MAX_BODY_BYTES: z.coerce
    .number()
    .int()
    .min(1024)
    .default(10 * 1024 * 1024),
  MDM_LOG_LEVEL: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
  MDM_PUSH_SWEEP_SECONDS: z.coerce.number().int().min(10).max(86_400).default(300),
  MDM_VPP_SYNC_SECONDS: z.coerce.number().int().min(1).max(86_400).default(600),
});

export type Env = z.input<typeof envSchema>;

export interface Config {
  env: 'development' | 'production';
  host: string;
  port: number;
  /** The base URL devices and users reach, without a trailing slash. */
  publicUrl: string;
  dataDir: string;
  databaseUrl: string;
  /** Set in production; in development generated into the data dir when missing. */
  adminToken: string | null;
  /**
   * `MDM_SECRET_KEY` as given (64 hex characters, or a passphrase: `secretKeyFrom`); null: the key in
   * `<data dir>/secret.key`, generated on first start, in development and production alike.
   */
  secretKey: string | null;
  apnsUrl: string;
  vppUrl: string;
  /** True when APNs is not Apple's: the development push certificate may be used as a fallback. */
  devPushAllowed: boolean;
  smtpUrl: string | null;
  mailFrom: string | null;
  /** Pacing of invitation emails: messages handed to SMTP per second, per instance (`MDM_MAIL_RATE`). */
  mailRate: number;
  ldap: {
    url: string;
    bindDn: string | null;
    bindPassword: string | null;
    userBase: string;
    userFilter: string;
  } | null;
  trustProxyCertHeader: boolean;
  tls: { certFile: string; keyFile: string } | null;
  deviceCa: { certFile: string; keyFile: string } | null;
  maxBodyBytes: number;
  /** How often pushes are re-requested for enrollments whose commands stay unanswered that long. */
  pushSweepSeconds: number;
  /** How often every location's users are synced with Apple's Apps and Books service (`users?sinceVersionId=`). */
  vppSyncSeconds: number;
  logLevel: 'fatal' | 'error' | 'warn' | 'info' | 'debug' | 'trace' | 'silent';
}

export class ConfigError extends Error {
  constructor(readonly problems: string[]) {
    super(`invalid configuration:\n${problems.map((p) => `  - ${p}`).join('\n')}`);
    this.name = 'ConfigError';
  }
}

/**
 * Reads the whole configuration once; every problem is reported at once: each malformed value and each
 * cross-field problem (a check that depends on a malformed value is skipped, that value is reported).
 */
export function loadConfig(env: Record<string, string | undefined>, cwd = process.cwd()): Readonly<Config> {
  const input: Record<string, string> = {};
  for (const key of Object.keys(envSchema.shape)) {
    const v = env[key];
    if (v !== undefined && v !== '') input[key] = v;
  }
  const problems: string[] = [];
  const failed = new Set<string>();
  const parsed = envSchema.safeParse(input);
  if (!parsed.success) {
    for (const i of parsed.error.issues) {
      problems.push(`${i.path.join('.')}: ${i.message}`);
      if (i.path[0] !== undefined) failed.add(String(i.path[0]));
    }
  }
  // The malformed values left out (every field is optional or has a default), to check the rest.
  const e = parsed.success
    ? parsed.data
    : envSchema.parse(Object.fromEntries(Object.entries(input).filter(([k]) => !failed.has(k))));
  /** Not given (a malformed value was given: it is already reported). */
  const missing = (key: keyof typeof e) => !e[key] && !failed.has(key);
  const production = e.MDM_ENV === 'production';
  if (production) {
    if (missing('MDM_ADMIN_TOKEN')) problems.push('MDM_ADMIN_TOKEN: required in production');
    if (missing('MDM_PUBLIC_URL')) problems.push('MDM_PUBLIC_URL: required in production');
    if (!e.MDM_TLS_CERT_FILE || !e.MDM_TLS_KEY_FILE)
      problems.push('MDM_TLS_CERT_FILE and MDM_TLS_KEY_FILE: required in production');
    if (!e.MDM_DEVICE_CA_CERT_FILE || !e.MDM_DEVICE_CA_KEY_FILE)
      problems.push('MDM_DEVICE_CA_CERT_FILE and MDM_DEVICE_CA_KEY_FILE: required in production');
  }
  if (Boolean(e.MDM_TLS_CERT_FILE) !== Boolean(e.MDM_TLS_KEY_FILE))
    problems.push('MDM_TLS_CERT_FILE and MDM_TLS_KEY_FILE: give both or neither');
  if (Boolean(e.MDM_DEVICE_CA_CERT_FILE) !== Boolean(e.MDM_DEVICE_CA_KEY_FILE))
    problems.push('MDM_DEVICE_CA_CERT_FILE and MDM_DEVICE_CA_KEY_FILE: give both or neither');
  if (e.MDM_LDAP_URL && missing('MDM_LDAP_USER_BASE'))
    problems.push('MDM_LDAP_USER_BASE: required with MDM_LDAP_URL');
  if (
    e.MDM_LDAP_URL &&
    !failed.has('MDM_LDAP_USER_FILTER') &&
    !e.MDM_LDAP_USER_FILTER.includes('{{username}}')
  )
    problems.push('MDM_LDAP_USER_FILTER: must contain {{username}}');
  if (problems.length > 0) throw new ConfigError(problems);

  const dataDir = path.resolve(cwd, e.MDM_DATA_DIR);
  const apnsUrl = e.MDM_APNS_URL ?? (production ? APPLE_APNS_URL : SIMULATOR_APNS_URL);
  const databaseUrl = normaliseDatabaseUrl(
    e.MDM_DATABASE_URL ?? `sqlite:${path.join(dataDir, 'mdm.sqlite')}`,
    cwd,
  );
  const publicUrl = (e.MDM_PUBLIC_URL ?? `https://localhost:${e.MDM_PORT}`).replace(/\/+$/, '');
  return Object.freeze({
    env: e.MDM_ENV,
    host: e.MDM_HOST,
    port: e.MDM_PORT,
    publicUrl,
    dataDir,
    databaseUrl,
    adminToken: e.MDM_ADMIN_TOKEN ?? null,
    secretKey: e.MDM_SECRET_KEY ?? null,
    apnsUrl: apnsUrl.replace(/\/+$/, ''),
    vppUrl: (e.MDM_VPP_URL ?? (production ? APPLE_VPP_URL : SIMULATOR_VPP_URL)).replace(/\/+$/, ''),
    devPushAllowed: new URL(apnsUrl).host !== new URL(APPLE_APNS_URL).host,
    smtpUrl: e.MDM_SMTP_URL ?? null,
    mailFrom: e.MDM_MAIL_FROM ?? null,
    mailRate: e.MDM_MAIL_RATE,
    ldap: e.MDM_LDAP_URL
      ? {
          url: e.MDM_LDAP_URL,
          bindDn: e.MDM_LDAP_BIND_DN ?? null,
          bindPassword: e.MDM_LDAP_BIND_PASSWORD ?? null,
          userBase: e.MDM_LDAP_USER_BASE ?? '',
          userFilter: e.MDM_LDAP_USER_FILTER,
        }
      : null,
    trustProxyCertHeader: e.MDM_TRUST_PROXY_CERT_HEADER,
    tls:
      e.MDM_TLS_CERT_FILE && e.MDM_TLS_KEY_FILE
        ? { certFile: path.resolve(cwd, e.MDM_TLS_CERT_FILE), keyFile: path.resolve(cwd, e.MDM_TLS_KEY_FILE) }
        : null,
    deviceCa:
      e.MDM_DEVICE_CA_CERT_FILE && e.MDM_DEVICE_CA_KEY_FILE
        ? {
            certFile: path.resolve(cwd, e.MDM_DEVICE_CA_CERT_FILE),
            keyFile: path.resolve(cwd, e.MDM_DEVICE_CA_KEY_FILE),
          }
        : null,
    maxBodyBytes: e.MDM_MAX_BODY_BYTES,
    pushSweepSeconds: e.MDM_PUSH_SWEEP_SECONDS,
    vppSyncSeconds: e.MDM_VPP_SYNC_SECONDS,
    logLevel: e.MDM_LOG_LEVEL,
  });
}

/** An admin token shorter than this is accepted with a warning. */
export const ADMIN_TOKEN_WARN_BELOW = 16;
/** A secret-key passphrase (not 64 hex characters) shorter than this is accepted with a warning. */
export const SECRET_PASSPHRASE_WARN_BELOW = 16;

/**
 * What the server warns about once at start (never a secret's value): a short admin token, and, in
 * production, a secret key kept in the data dir, which every instance must share.
 */
export function configWarnings(
  config: Pick<Config, 'env' | 'adminToken' | 'secretKey' | 'dataDir'>,
): string[] {
  const warnings: string[] = [];
  if (config.adminToken !== null && config.adminToken.length < ADMIN_TOKEN_WARN_BELOW) {
    warnings.push(
      `MDM_ADMIN_TOKEN is shorter than ${ADMIN_TOKEN_WARN_BELOW} characters: use a long random token ` +
        '(e.g. `openssl rand -base64 32`)',
    );
  }
  if (
    config.secretKey !== null &&
    !/^[0-9a-fA-F]{64}$/.test(config.secretKey) &&
    config.secretKey.length < SECRET_PASSPHRASE_WARN_BELOW
  ) {
    warnings.push(
      `MDM_SECRET_KEY is a passphrase shorter than ${SECRET_PASSPHRASE_WARN_BELOW} characters: use 64 hex ` +
        'characters (e.g. `openssl rand -hex 32`) or a long passphrase',
    );
  }
  if (config.env === 'production' && config.secretKey === null) {
    warnings.push(
      `MDM_SECRET_KEY is not set: the secret key is read from ${path.join(config.dataDir, 'secret.key')} ` +
        '(generated there on first start); several instances must share it: give them the same ' +
        'MDM_SECRET_KEY or the same data dir',
    );
  }
  return warnings;
}

function normaliseDatabaseUrl(u: string, cwd: string): string {
  if (!u.startsWith('sqlite:')) return u;
  const p = u.slice('sqlite:'.length);
  if (p === ':memory:') return u;
  return `sqlite:${path.resolve(cwd, p)}`;
}
