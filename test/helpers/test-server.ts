import { promises as fs } from 'node:fs';
import https from 'node:https';
import os from 'node:os';
import path from 'node:path';
import { loadConfig } from '../../server/config.ts';
import { createLogger } from '../../server/log.ts';
import { startServer, type RunningServer } from '../../server/server.ts';

export interface TestServer {
  server: RunningServer;
  dataDir: string;
  ca: string;
  agent: https.Agent;
  /** Admin API call with the admin token (unless `token` is given; `null` sends none). */
  api(method: string, route: string, body?: unknown, token?: string | null): Promise<HttpAnswer>;
  request(method: string, route: string, opts?: RequestOptions): Promise<HttpAnswer>;
  stop(): Promise<void>;
}

export interface RequestOptions {
  body?: Buffer | string;
  headers?: Record<string, string>;
  /** TLS client certificate and key (PEM). */
  cert?: string;
  key?: string;
}

export interface HttpAnswer {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: Buffer;
  text: string;
  json: <T = unknown>() => T;
}

/**
 * Starts a real server (HTTPS on a free port, SQLite in a temp dir unless `databaseUrl`). A given
 * `MDM_DATA_DIR` is used as is and kept on `stop()` (a restart test starts a server on it again).
 */
export async function startTestServer(env: Record<string, string> = {}): Promise<TestServer> {
  const ownDataDir = env.MDM_DATA_DIR === undefined;
  const dataDir = env.MDM_DATA_DIR ?? (await fs.mkdtemp(path.join(os.tmpdir(), 'mdm-test-')));
  const config = loadConfig({
    MDM_PORT: '0',
    MDM_HOST: '127.0.0.1',
    MDM_PUBLIC_URL: 'https://127.0.0.1:0',
    MDM_LOG_LEVEL: 'silent',
    ...env,
    MDM_DATA_DIR: dataDir,
  });
  const server = await startServer(
    config,
    createLogger(process.env.MDM_TEST_LOG_LEVEL === 'debug' ? 'debug' : 'silent'),
  );
  const ca = await fs.readFile(server.caCertPath, 'utf8');
  const agent = new https.Agent({ ca, keepAlive: true });
  const request = (method: string, route: string, opts: RequestOptions = {}) =>
    httpsRequest(new URL(route, server.url), method, { ca, agent: opts.cert ? undefined : agent, ...opts });
  return {
    server,
    dataDir,
    ca,
    agent,
    request,
    api(method, route, body, token) {
      const headers: Record<string, string> = {};
      const t = token === undefined ? server.adminToken : token;
      if (t !== null) headers.authorization = `Bearer ${t}`;
      let payload: string | undefined;
      if (body !== undefined) {
        headers['content-type'] = 'application/json';
        payload = typeof body === 'string' ? body : JSON.stringify(body);
      }
      return request(method, `/api/v1${route}`, {
        headers,
        ...(payload !== undefined ? { body: payload } : {}),
      });
    },
    async stop() {
      agent.destroy();
      await server.close();
      if (ownDataDir) await fs.rm(dataDir, { recursive: true, force: true });
    },
  };
}

export function httpsRequest(
  url: URL,
  method: string,
  opts: RequestOptions & { ca: string; agent?: https.Agent | undefined },
): Promise<HttpAnswer> {
  return new Promise((resolve, reject) => {
    const req = https.request(
      url,
      {
        method,
        ca: opts.ca,
        headers: {
          ...(opts.body !== undefined ? { 'content-length': String(Buffer.byteLength(opts.body)) } : {}),
          ...opts.headers,
        },
        ...(opts.agent ? { agent: opts.agent } : { agent: false }),
        ...(opts.cert ? { cert: opts.cert, key: opts.key } : {}),
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => {
          const body = Buffer.concat(chunks);
          const text = body.toString('utf8');
          resolve({
            status: res.statusCode ?? 0,
            headers: res.headers,
            body,
            text,
            json: <T>() => JSON.parse(text) as T,
          });
        });
        res.on('error', reject);
      },
    );
    req.on('error', reject);
    if (opts.body !== undefined) req.write(opts.body);
    req.end();
  });
}
