import { spawn, type ChildProcess } from 'node:child_process';
import { promises as fs } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const repo = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

export interface ServerProcess {
  url: string;
  adminToken: string;
  ca: string;
  dataDir: string;
  stop(): Promise<void>;
}

/**
 * Runs `npm start`'s entry point as its own process (as in production), on a fresh data dir (or on
 * `opts.dataDir`, e.g. one whose development PKI the simulator's services share; left to the caller).
 */
export async function startServerProcess(
  port: number,
  env: Record<string, string> = {},
  opts: { dataDir?: string } = {},
): Promise<ServerProcess> {
  const dataDir = opts.dataDir ?? (await fs.mkdtemp(path.join(os.tmpdir(), 'mdm-bench-')));
  const child: ChildProcess = spawn(
    process.execPath,
    ['--import', 'tsx', path.join(repo, 'server/main.ts')],
    {
      cwd: repo,
      env: {
        ...process.env,
        MDM_DATA_DIR: dataDir,
        MDM_PORT: String(port),
        MDM_HOST: '127.0.0.1',
        MDM_PUBLIC_URL: `https://127.0.0.1:${port}`,
        MDM_LOG_LEVEL: 'warn',
        ...env,
      },
      stdio: ['ignore', 'pipe', 'inherit'],
    },
  );
  const url = await new Promise<string>((resolve, reject) => {
    let out = '';
    const timer = setTimeout(() => reject(new Error(`server did not start: ${out}`)), 60_000);
    child.stdout?.on('data', (chunk: Buffer) => {
      out += chunk.toString();
      const m = /MDM server \(development\) at (\S+)/.exec(out);
      if (m?.[1]) {
        clearTimeout(timer);
        resolve(m[1]);
      }
    });
    child.once('exit', (code) => reject(new Error(`server exited with ${code}: ${out}`)));
  });
  child.stdout?.resume();
  return {
    url,
    dataDir,
    adminToken: (await fs.readFile(path.join(dataDir, 'admin-token'), 'utf8')).trim(),
    ca: await fs.readFile(path.join(dataDir, 'certs', 'ca.pem'), 'utf8'),
    async stop() {
      const exited = new Promise((r) => child.once('exit', r));
      child.kill('SIGTERM');
      await exited;
      if (opts.dataDir === undefined) await fs.rm(dataDir, { recursive: true, force: true });
    },
  };
}
