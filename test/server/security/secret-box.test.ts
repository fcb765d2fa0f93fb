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
    parts[3] = Buffer.from('y').toString('base64url');
    expect(() => box.open(parts.join('.'), 'location:1')).to.throw();
    expect(() => box.open('garbage', 'location:1')).to.throw('not a sealed secret');
  });

  it('needs a 32-byte key', () => {
    expect(() => new SecretBox('abcd')).to.throw('32 bytes');
  });
});
