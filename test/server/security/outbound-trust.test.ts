import { expect } from 'chai';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { rootCertificates } from 'node:tls';
import { createCaCertificate, generateKeyPair } from '../../../shared/crypto/index.ts';
import { defaultTrust, outboundCa } from '../../../server/security/outbound-trust.ts';

describe('outbound TLS trust', () => {
  let dir: string;
  let privateCa: string;
  let devCa: string;

  before(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'mdm-trust-'));
    const make = async (cn: string) => {
      const keys = await generateKeyPair(2048);
      return createCaCertificate({ subject: { CN: cn }, keyPem: keys.privateKeyPem, days: 30 });
    };
    privateCa = await make('Private CA');
    devCa = await make('Development CA');
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it("keeps NODE_EXTRA_CA_CERTS when a connection also needs the development CA (a `ca` list replaces Node's store)", async () => {
    const file = path.join(dir, 'extra.pem');
    await writeFile(file, `# a comment\n${privateCa}\nnot a certificate\n`);
    const ca = outboundCa([devCa], { NODE_EXTRA_CA_CERTS: file });
    expect(ca).to.have.length(rootCertificates.length + 2);
    expect(ca?.slice(0, rootCertificates.length)).to.deep.equal([...rootCertificates]);
    expect(ca?.[rootCertificates.length]?.trim()).to.equal(privateCa.trim());
    expect(ca?.[rootCertificates.length + 1]).to.equal(devCa);
  });

  it("nothing extra: Node's default (undefined); a missing or broken file adds nothing", async () => {
    expect(outboundCa([], { NODE_EXTRA_CA_CERTS: path.join(dir, 'extra.pem') })).to.equal(undefined);
    expect(defaultTrust({ NODE_EXTRA_CA_CERTS: path.join(dir, 'missing.pem') })).to.deep.equal([
      ...rootCertificates,
    ]);
    const broken = path.join(dir, 'broken.pem');
    await writeFile(broken, '-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n');
    expect(defaultTrust({ NODE_EXTRA_CA_CERTS: broken })).to.have.length(rootCertificates.length);
    expect(defaultTrust({})).to.have.length(rootCertificates.length);
  });
});
