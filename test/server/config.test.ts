import { expect } from 'chai';
import path from 'node:path';
import {
  ConfigError,
  loadConfig,
  SIMULATOR_APNS_URL,
  SIMULATOR_VPP_URL,
  APPLE_APNS_URL,
} from '../../server/config.ts';

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
});
