import { expect } from 'chai';
import { promises as fs } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Writable } from 'node:stream';
import { ensureDevPki } from '../../certs/dev-pki.ts';
import {
  ConfigError,
  configWarnings,
  loadConfig,
  SIMULATOR_APNS_URL,
  SIMULATOR_VPP_URL,
  APPLE_APNS_URL,
} from '../../server/config.ts';
import { createLogger } from '../../server/log.ts';
import { startServer } from '../../server/server.ts';
import { httpsRequest } from '../helpers/test-server.ts';

/** The production settings api.md requires (certificate files need not exist for `loadConfig`). */
const PRODUCTION = {
  MDM_ENV: 'production',
  MDM_ADMIN_TOKEN: 'x'.repeat(32),
  MDM_PUBLIC_URL: 'https://mdm.example.com/',
  MDM_TLS_CERT_FILE: 'tls.pem',
  MDM_TLS_KEY_FILE: 'tls.key',
  MDM_DEVICE_CA_CERT_FILE: 'ca.pem',
  MDM_DEVICE_CA_KEY_FILE: 'ca.key',
};

function problemsOf(env: Record<string, string>): string[] {
  try {
    loadConfig(env);
  } catch (err) {
    expect(err).to.be.instanceOf(ConfigError);
    return (err as ConfigError).problems;
  }
  return expect.fail('should throw');
}

describe('config', () => {
  it('development needs no setting', () => {
    const c = loadConfig({}, '/srv/app');
    expect(c.env).to.equal('development');
    expect(c.port).to.equal(8443);
    expect(c.dataDir).to.equal('/srv/app/data');
    expect(c.databaseUrl).to.equal('sqlite:/srv/app/data/mdm.sqlite');
    expect(c.publicUrl).to.equal('https://localhost:8443');
    expect(c.apnsUrl).to.equal(SIMULATOR_APNS_URL);
    expect(c.vppUrl).to.equal(SIMULATOR_VPP_URL);
    expect(c.devPushAllowed).to.equal(true);
    expect(c.smtpUrl).to.equal(null);
    expect(c.ldap).to.equal(null);
    expect(c.trustProxyCertHeader).to.equal(false);
    expect(Object.isFrozen(c)).to.equal(true);
  });

  it('resolves a relative sqlite path against the working directory', () => {
    const c = loadConfig({ MDM_DATABASE_URL: 'sqlite:db/x.sqlite' }, '/srv/app');
    expect(c.databaseUrl).to.equal(`sqlite:${path.resolve('/srv/app', 'db/x.sqlite')}`);
  });

  it('production requires its settings and reports every problem at once', () => {
    try {
      loadConfig({ MDM_ENV: 'production' });
      expect.fail('should throw');
    } catch (err) {
      expect(err).to.be.instanceOf(ConfigError);
      const problems = (err as ConfigError).problems.join('\n');
      expect(problems).to.include('MDM_ADMIN_TOKEN');
      expect(problems).to.include('MDM_PUBLIC_URL');
      expect(problems).to.include('MDM_TLS_CERT_FILE');
      expect(problems).to.include('MDM_DEVICE_CA_CERT_FILE');
    }
  });

  it('production defaults to Apple and allows no development push certificate', () => {
    const c = loadConfig({
      MDM_ENV: 'production',
      MDM_ADMIN_TOKEN: 'x'.repeat(32),
      MDM_PUBLIC_URL: 'https://mdm.example.com/',
      MDM_SECRET_KEY: 'a'.repeat(64),
      MDM_TLS_CERT_FILE: 'tls.pem',
      MDM_TLS_KEY_FILE: 'tls.key',
      MDM_DEVICE_CA_CERT_FILE: 'ca.pem',
      MDM_DEVICE_CA_KEY_FILE: 'ca.key',
    });
    expect(c.apnsUrl).to.equal(APPLE_APNS_URL);
    expect(c.devPushAllowed).to.equal(false);
    expect(c.publicUrl).to.equal('https://mdm.example.com');
  });

  it('rejects malformed values, naming each variable', () => {
    try {
      loadConfig({ MDM_PORT: 'eighty', MDM_DATABASE_URL: 'oracle://x', MDM_SMTP_URL: 'http://mail' });
      expect.fail('should throw');
    } catch (err) {
      expect(err).to.be.instanceOf(ConfigError);
      const problems = (err as ConfigError).problems;
      expect(problems.some((p) => p.startsWith('MDM_PORT'))).to.equal(true);
      expect(problems.some((p) => p.startsWith('MDM_DATABASE_URL'))).to.equal(true);
      expect(problems.some((p) => p.startsWith('MDM_SMTP_URL'))).to.equal(true);
    }
  });

  it('LDAP needs a user base and a filter with the username placeholder', () => {
    expect(() => loadConfig({ MDM_LDAP_URL: 'ldap://127.0.0.1', MDM_LDAP_USER_FILTER: '(uid=x)' }))
      .to.throw(ConfigError)
      .with.property('problems')
      .that.satisfies(
        (p: string[]) =>
          p.some((x) => x.includes('MDM_LDAP_USER_BASE')) && p.some((x) => x.includes('{{username}}')),
      );
  });

  it('accepts an admin token of any length, and warns (without the token) when it is short', () => {
    for (const env of [{}, PRODUCTION]) {
      const c = loadConfig({ ...env, MDM_ADMIN_TOKEN: 'tiny' });
      expect(c.adminToken).to.equal('tiny');
      const warnings = configWarnings(c);
      expect(warnings.filter((w) => w.includes('MDM_ADMIN_TOKEN'))).to.have.length(1);
      expect(warnings.join('\n')).not.to.include('tiny');
    }
    expect(loadConfig({ MDM_ADMIN_TOKEN: 'x' }).adminToken).to.equal('x');
    expect(configWarnings(loadConfig({ MDM_ADMIN_TOKEN: 'x'.repeat(16) }))).to.deep.equal([]);
    expect(configWarnings(loadConfig({}))).to.deep.equal([]);
  });

  it('refuses an admin token with whitespace (a bearer token is \\S+)', () => {
    for (const token of ['two words', ' leading', 'trailing ', 'tab\there', ' ']) {
      const problems = problemsOf({ MDM_ADMIN_TOKEN: token });
      expect(problems).to.deep.equal(['MDM_ADMIN_TOKEN: must not contain whitespace']);
    }
    // In production too, reported once (malformed), not also as missing.
    const problems = problemsOf({ ...PRODUCTION, MDM_ADMIN_TOKEN: 'a b' });
    expect(problems).to.deep.equal(['MDM_ADMIN_TOKEN: must not contain whitespace']);
  });

  it('takes any non-empty MDM_SECRET_KEY as given (64 hex characters or a passphrase)', () => {
    const hex = 'Ab'.repeat(32);
    expect(loadConfig({ MDM_SECRET_KEY: hex }).secretKey).to.equal(hex);
    expect(loadConfig({ MDM_SECRET_KEY: 'correct horse' }).secretKey).to.equal('correct horse');
    expect(loadConfig({ MDM_SECRET_KEY: 'abcd' }).secretKey).to.equal('abcd');
    expect(loadConfig({ MDM_SECRET_KEY: '' }).secretKey).to.equal(null);
    expect(loadConfig({}).secretKey).to.equal(null);
  });

  it('trims MDM_SECRET_KEY (a stray newline must not make a 64-hex key a passphrase); warns on a short passphrase', () => {
    const hex = 'ab'.repeat(32);
    expect(loadConfig({ MDM_SECRET_KEY: `${hex}\n` }).secretKey).to.equal(hex);
    expect(loadConfig({ MDM_SECRET_KEY: `  ${hex} ` }).secretKey).to.equal(hex);
    expect(problemsOf({ MDM_SECRET_KEY: ' \n ' })).to.deep.equal(['MDM_SECRET_KEY: must not be empty']);
    expect(configWarnings(loadConfig({ MDM_SECRET_KEY: hex }))).to.deep.equal([]);
    const short = configWarnings(loadConfig({ MDM_SECRET_KEY: 'hunter2' }));
    expect(short).to.have.length(1);
    expect(short[0]).to.include('MDM_SECRET_KEY').and.not.include('hunter2');
    expect(configWarnings(loadConfig({ MDM_SECRET_KEY: 'a long enough passphrase' }))).to.deep.equal([]);
  });

  it('production does not require MDM_SECRET_KEY: it warns that instances must share the data-dir key', () => {
    const c = loadConfig(PRODUCTION, '/srv/app');
    expect(c.secretKey).to.equal(null);
    const warnings = configWarnings(c);
    expect(warnings).to.have.length(1);
    expect(warnings[0]).to.include('MDM_SECRET_KEY');
    expect(warnings[0]).to.include('/srv/app/data/secret.key');
    expect(warnings[0]).to.include('same');
    expect(configWarnings(loadConfig({ ...PRODUCTION, MDM_SECRET_KEY: 'k'.repeat(20) }))).to.deep.equal([]);
    // Development keeps it in the data dir silently.
    expect(configWarnings(loadConfig({}))).to.deep.equal([]);
  });

  it('reports malformed values and cross-field problems together', () => {
    const alone = problemsOf({ MDM_ENV: 'production' });
    expect(alone).to.have.length(4);
    const problems = problemsOf({ MDM_ENV: 'production', MDM_PORT: 'abc' });
    expect(problems).to.have.length(5);
    expect(problems.filter((p) => p.startsWith('MDM_PORT'))).to.have.length(1);
    expect(problems).to.include.members(alone);
    // A check that depends on a malformed value is skipped; the others still run.
    const ldap = problemsOf({
      MDM_ENV: 'production',
      MDM_PUBLIC_URL: 'ftp://mdm.example.com',
      MDM_LDAP_URL: 'http://ldap',
      MDM_TLS_CERT_FILE: 'tls.pem',
    });
    expect(ldap.filter((p) => p.startsWith('MDM_PUBLIC_URL'))).to.deep.equal([
      'MDM_PUBLIC_URL: must be a URL (https:, http:)',
    ]);
    expect(ldap.some((p) => p.startsWith('MDM_LDAP_URL'))).to.equal(true);
    expect(ldap.some((p) => p.startsWith('MDM_LDAP_USER_BASE'))).to.equal(false);
    expect(ldap).to.include('MDM_ADMIN_TOKEN: required in production');
    expect(ldap).to.include('MDM_TLS_CERT_FILE and MDM_TLS_KEY_FILE: give both or neither');
    expect(ldap).to.include('MDM_DEVICE_CA_CERT_FILE and MDM_DEVICE_CA_KEY_FILE: required in production');
  });

  describe('production start without MDM_SECRET_KEY', () => {
    let tmp: string;
    before(async () => {
      tmp = await fs.mkdtemp(path.join(os.tmpdir(), 'mdm-config-'));
    });
    after(async () => {
      await fs.rm(tmp, { recursive: true, force: true });
    });

    it('keeps the key in the data dir, warns once, and takes a short admin token', async () => {
      const pki = await ensureDevPki(path.join(tmp, 'pki'), { hostnames: ['127.0.0.1'] });
      const dataDir = path.join(tmp, 'data');
      const token = 'tiny-tok';
      const config = loadConfig({
        MDM_ENV: 'production',
        MDM_HOST: '127.0.0.1',
        MDM_PORT: '0',
        MDM_PUBLIC_URL: 'https://127.0.0.1:0',
        MDM_DATA_DIR: dataDir,
        MDM_ADMIN_TOKEN: token,
        MDM_TLS_CERT_FILE: path.join(pki.dir, 'server.pem'),
        MDM_TLS_KEY_FILE: path.join(pki.dir, 'server.key.pem'),
        MDM_DEVICE_CA_CERT_FILE: path.join(pki.dir, 'device-ca.pem'),
        MDM_DEVICE_CA_KEY_FILE: path.join(pki.dir, 'device-ca.key.pem'),
      });
      const start = async () => {
        const lines: string[] = [];
        const sink = new Writable({
          write(chunk: Buffer, _enc, done) {
            lines.push(...chunk.toString('utf8').split('\n').filter(Boolean));
            done();
          },
        });
        const server = await startServer(config, createLogger('info', sink));
        return { server, lines };
      };

      const first = await start();
      try {
        const key = (await fs.readFile(path.join(dataDir, 'secret.key'), 'utf8')).trim();
        expect(key).to.match(/^[0-9a-f]{64}$/);
        const warnings = first.lines
          .map((l) => JSON.parse(l) as { level: number; msg: string })
          .filter((l) => l.level === 40)
          .map((l) => l.msg);
        expect(warnings.filter((w) => w.includes('MDM_SECRET_KEY'))).to.have.length(1);
        expect(warnings.filter((w) => w.includes('MDM_ADMIN_TOKEN'))).to.have.length(1);
        expect(first.lines.join('\n')).not.to.include(token);
        const answer = await httpsRequest(new URL('/api/v1/sites', first.server.url), 'GET', {
          ca: pki.caCertPem,
          headers: { authorization: `Bearer ${token}` },
        });
        expect(answer.status).to.equal(200);
      } finally {
        await first.server.close();
      }

      // A restart reads the same key.
      const keyBefore = await fs.readFile(path.join(dataDir, 'secret.key'), 'utf8');
      const second = await start();
      await second.server.close();
      expect(await fs.readFile(path.join(dataDir, 'secret.key'), 'utf8')).to.equal(keyBefore);
    });
  });
});
