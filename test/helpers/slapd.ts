import { spawn, type ChildProcess } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, promises as fs } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { Client } from 'ldapts';

/**
 * A real OpenLDAP server for tests: `slapd` from a generated `slapd.conf` (mdb backend) in a temp
 * dir, listening on `ldap://127.0.0.1:<free port>`, with a generated directory loaded offline
 * (`slapd -T add`) before it starts. Debian: `apt-get install slapd ldap-utils` (`.ci/run` does it).
 */
export const SLAPD_BINARY = '/usr/sbin/slapd';
export const SLAPD_SKIP_MESSAGE =
  'skipping LDAP tests: slapd is not installed (apt-get install slapd ldap-utils)';
const SCHEMA_DIR = '/etc/ldap/schema';
const MODULE_DIR = '/usr/lib/ldap';

export function slapdAvailable(): boolean {
  return existsSync(SLAPD_BINARY) && existsSync(path.join(SCHEMA_DIR, 'inetorgperson.schema'));
}

export interface DirectoryUser {
  uid: string;
  password: string;
  cn: string;
  sn: string;
  mail?: string;
}

export interface Slapd {
  url: string;
  suffix: string;
  rootDn: string;
  rootPassword: string;
  /** A read-only service account for search binds. */
  serviceDn: string;
  servicePassword: string;
  /** `ou=people,<suffix>`: where the users are. */
  peopleBase: string;
  users: DirectoryUser[];
  /** The DN of a user of `users`. */
  dnOf(uid: string): string;
  stop(): Promise<void>;
}

export const DEFAULT_DIRECTORY_USERS: DirectoryUser[] = [
  {
    uid: 'alice',
    password: 'alice-Secret-1',
    cn: 'Alice Liddell',
    sn: 'Liddell',
    mail: 'alice@example.test',
  },
  { uid: 'bob', password: 'bob-Secret-2', cn: 'Bob Builder', sn: 'Builder', mail: 'bob@example.test' },
  {
    uid: 'carol',
    password: 'carol-Secret-3',
    cn: 'Carol Danvers',
    sn: 'Danvers',
    mail: 'shared@example.test',
  },
  { uid: 'dave', password: 'dave-Secret-4', cn: 'Dave Bowman', sn: 'Bowman', mail: 'shared@example.test' },
];

/** `{SSHA}`: base64(SHA-1(password ‖ salt) ‖ salt), as `slappasswd -h {SSHA}` makes. */
export function ssha(password: string): string {
  const salt = randomBytes(8);
  const digest = createHash('sha1').update(password, 'utf8').update(salt).digest();
  return `{SSHA}${Buffer.concat([digest, salt]).toString('base64')}`;
}

/** An LDIF value: plain when safe, base64 (`::`) otherwise. */
function ldifLine(attr: string, value: string): string {
  return /^[\x21-\x39\x3b\x3d-\x7e][\x20-\x7e]*$/.test(value) && !value.endsWith(' ')
    ? `${attr}: ${value}`
    : `${attr}:: ${Buffer.from(value, 'utf8').toString('base64')}`;
}

async function freePort(): Promise<number> {
  const srv = net.createServer();
  await new Promise<void>((resolve, reject) => {
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', resolve);
  });
  const port = (srv.address() as net.AddressInfo).port;
  await new Promise<void>((resolve) => srv.close(() => resolve()));
  return port;
}

function run(args: string[]): Promise<{ code: number | null; output: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(SLAPD_BINARY, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let output = '';
    child.stdout.on('data', (d: Buffer) => (output += d.toString()));
    child.stderr.on('data', (d: Buffer) => (output += d.toString()));
    child.once('error', reject);
    child.once('exit', (code) => resolve({ code, output }));
  });
}

async function answers(url: string, dn: string, password: string): Promise<boolean> {
  const client = new Client({ url, connectTimeout: 500, timeout: 1000 });
  try {
    await client.bind(dn, password);
    return true;
  } catch {
    return false;
  } finally {
    await client.unbind().catch(() => undefined);
  }
}

function exited(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => child.once('exit', () => resolve()));
}

export async function startSlapd(opts: { users?: DirectoryUser[] } = {}): Promise<Slapd> {
  if (!slapdAvailable()) throw new Error(SLAPD_SKIP_MESSAGE);
  const users = opts.users ?? DEFAULT_DIRECTORY_USERS;
  const suffix = 'dc=example,dc=test';
  const rootDn = `cn=admin,${suffix}`;
  const rootPassword = randomBytes(12).toString('base64url');
  const serviceDn = `cn=reader,ou=services,${suffix}`;
  const servicePassword = randomBytes(12).toString('base64url');
  const peopleBase = `ou=people,${suffix}`;
  const dnOf = (uid: string) => `uid=${uid},${peopleBase}`;

  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'slapd-test-'));
  const dbDir = path.join(dir, 'db');
  await fs.mkdir(dbDir);
  const conf = path.join(dir, 'slapd.conf');
  await fs.writeFile(
    conf,
    [
      ...['core', 'cosine', 'nis', 'inetorgperson'].map((s) => `include ${SCHEMA_DIR}/${s}.schema`),
      `pidfile ${path.join(dir, 'slapd.pid')}`,
      `argsfile ${path.join(dir, 'slapd.args')}`,
      `modulepath ${MODULE_DIR}`,
      'moduleload back_mdb',
      // Like Active Directory: a simple bind with a DN and an empty password "succeeds" as an
      // unauthenticated bind. The authenticator must refuse empty passwords itself.
      'allow bind_anon_dn',
      'sizelimit 100',
      'database mdb',
      'maxsize 16777216',
      `suffix "${suffix}"`,
      `rootdn "${rootDn}"`,
      `rootpw ${ssha(rootPassword)}`,
      `directory ${dbDir}`,
      'index objectClass,uid,mail eq',
      'access to attrs=userPassword by self write by anonymous auth by * none',
      'access to * by users read by * none',
      '',
    ].join('\n'),
  );
  const entries: string[][] = [
    [`dn: ${suffix}`, 'objectClass: dcObject', 'objectClass: organization', 'dc: example', 'o: Example Test'],
    [`dn: ${peopleBase}`, 'objectClass: organizationalUnit', 'ou: people'],
    [`dn: ou=services,${suffix}`, 'objectClass: organizationalUnit', 'ou: services'],
    [
      `dn: ${serviceDn}`,
      'objectClass: organizationalRole',
      'objectClass: simpleSecurityObject',
      'cn: reader',
      `userPassword: ${ssha(servicePassword)}`,
    ],
    ...users.map((u) => [
      `dn: ${dnOf(u.uid)}`,
      'objectClass: inetOrgPerson',
      ldifLine('uid', u.uid),
      ldifLine('cn', u.cn),
      ldifLine('sn', u.sn),
      ...(u.mail ? [ldifLine('mail', u.mail)] : []),
      `userPassword: ${ssha(u.password)}`,
    ]),
  ];
  const ldif = path.join(dir, 'directory.ldif');
  await fs.writeFile(ldif, entries.map((e) => e.join('\n')).join('\n\n') + '\n');

  const cleanup = () => fs.rm(dir, { recursive: true, force: true });
  const loaded = await run(['-T', 'add', '-f', conf, '-l', ldif]);
  if (loaded.code !== 0) {
    await cleanup();
    throw new Error(`slapadd failed (${loaded.code}):\n${loaded.output}`);
  }

  for (let attempt = 1; ; attempt++) {
    const port = await freePort();
    const url = `ldap://127.0.0.1:${port}`;
    // `-d 0`: stay in the foreground (the test owns the process), no debug output.
    const child = spawn(SLAPD_BINARY, ['-f', conf, '-h', `${url}/`, '-d', '0'], {
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    let stderr = '';
    child.stderr?.on('data', (d: Buffer) => (stderr += d.toString()));
    const stop = async () => {
      if (child.exitCode === null && child.signalCode === null) {
        child.kill('SIGTERM');
        const timer = setTimeout(() => child.kill('SIGKILL'), 5000);
        await exited(child);
        clearTimeout(timer);
      }
      await cleanup();
    };
    const deadline = Date.now() + 10_000;
    let up = false;
    while (Date.now() < deadline && child.exitCode === null) {
      if (await answers(url, serviceDn, servicePassword)) {
        up = true;
        break;
      }
      await new Promise((r) => setTimeout(r, 50));
    }
    if (up) {
      return { url, suffix, rootDn, rootPassword, serviceDn, servicePassword, peopleBase, users, dnOf, stop };
    }
    if (child.exitCode === null) {
      child.kill('SIGKILL');
      await exited(child);
    }
    // Another process may have taken the port between the probe and the start: try another one.
    if (attempt >= 3) {
      await cleanup();
      throw new Error(`slapd did not start on ${url}:\n${stderr}`);
    }
  }
}
