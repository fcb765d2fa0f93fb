import { randomBytes } from 'node:crypto';
import { promises as fs } from 'node:fs';
import path from 'node:path';

/** Reads a secret kept in the data dir, or makes it (mode 0600) on first start. */
export async function readOrCreateSecret(dataDir: string, name: string, make: () => string): Promise<string> {
  const file = path.join(dataDir, name);
  try {
    const v = (await fs.readFile(file, 'utf8')).trim();
    if (v) return v;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
  const value = make();
  await fs
    .writeFile(file, `${value}\n`, { mode: 0o600, flag: 'wx' })
    .catch(async (err: NodeJS.ErrnoException) => {
      if (err.code !== 'EEXIST') throw err;
    });
  // Another process may have won the race: the file is the truth.
  return (await fs.readFile(file, 'utf8')).trim();
}

export const newAdminToken = () => randomBytes(32).toString('base64url');
export const newSecretKey = () => randomBytes(32).toString('hex');
