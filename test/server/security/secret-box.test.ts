import { expect } from 'chai';
import { SecretBox } from '../../../server/security/secret-box.ts';

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
});
