import { expect } from 'chai';
import { scryptSync } from 'node:crypto';
import { SECRET_KEY_SALT, SecretBox, secretKeyFrom } from '../../../server/security/secret-box.ts';

describe('SecretBox', () => {
  const box = new SecretBox('11'.repeat(32));

  it('round-trips and never shows the plaintext', () => {
    const sealed = box.seal('s3cret-token', 'location:1');
    expect(sealed).to.match(/^v1\./);
    expect(sealed).not.to.include('s3cret');
    expect(box.open(sealed, 'location:1')).to.equal('s3cret-token');
    expect(box.seal('s3cret-token', 'location:1')).not.to.equal(sealed); // fresh IV
  });

  it('refuses another purpose, another key, or a tampered value', () => {
    const sealed = box.seal('x', 'location:1');
    expect(() => box.open(sealed, 'location:2')).to.throw();
    expect(() => new SecretBox('22'.repeat(32)).open(sealed, 'location:1')).to.throw();
    const parts = sealed.split('.');
    // Flip one bit of the ciphertext (replacing it with a fixed byte would equal it 1 time in 256).
    const ct = Buffer.from(parts[3] ?? '', 'base64url');
    ct[0] = (ct[0] ?? 0) ^ 0x01;
    const tampered = [...parts];
    tampered[3] = ct.toString('base64url');
    expect(() => box.open(tampered.join('.'), 'location:1')).to.throw();
    // A truncated tag is refused, not checked on its first bytes only.
    const truncated = [...parts];
    truncated[2] = Buffer.from(parts[2] ?? '', 'base64url')
      .subarray(0, 4)
      .toString('base64url');
    expect(() => box.open(truncated.join('.'), 'location:1')).to.throw('not a sealed secret');
    expect(() => box.open('garbage', 'location:1')).to.throw('not a sealed secret');
  });

  it('needs a 32-byte key', () => {
    expect(() => new SecretBox('abcd')).to.throw('32 bytes');
  });

  describe('a configured secret (MDM_SECRET_KEY or <data dir>/secret.key)', () => {
    it('64 hex characters are the key itself: data sealed under it stays readable', () => {
      const hex = 'ab'.repeat(32);
      const sealed = new SecretBox(hex).seal('service-token', 'location:1');
      expect(SecretBox.fromSecret(hex).open(sealed, 'location:1')).to.equal('service-token');
      expect(SecretBox.fromSecret(hex.toUpperCase()).open(sealed, 'location:1')).to.equal('service-token');
      expect(SecretBox.fromSecret(hex).deriveId('mdm')).to.equal(new SecretBox(hex).deriveId('mdm'));
      expect(secretKeyFrom(hex).toString('hex')).to.equal(hex);
    });

    it('any other string is a passphrase: scrypt with the fixed, documented salt', () => {
      const pass = 'correct horse battery staple';
      const expected = scryptSync(pass, 'vpp-mdm MDM_SECRET_KEY v1', 32, { N: 16384, r: 8, p: 1 });
      expect(SECRET_KEY_SALT).to.equal('vpp-mdm MDM_SECRET_KEY v1');
      expect(secretKeyFrom(pass).equals(expected)).to.equal(true);
      // The same passphrase opens on another instance; another one does not.
      const sealed = SecretBox.fromSecret(pass).seal('x', 'location:1');
      expect(SecretBox.fromSecret(pass).open(sealed, 'location:1')).to.equal('x');
      expect(() => SecretBox.fromSecret('another passphrase').open(sealed, 'location:1')).to.throw();
      // Short, or hex of another length: a passphrase too, never a short key.
      expect(secretKeyFrom('abcd')).to.have.length(32);
      expect(secretKeyFrom('ab'.repeat(31))).to.have.length(32);
      expect(secretKeyFrom('ab'.repeat(31)).toString('hex')).not.to.include('ab'.repeat(31));
    });

    it('refuses an empty secret', () => {
      expect(() => secretKeyFrom('')).to.throw('empty');
    });
  });
});
