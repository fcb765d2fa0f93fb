/** The device's HTTP(S) client: one request, the whole answer in memory, a deadline, a size limit. */
import http from 'node:http';
import type { IncomingHttpHeaders } from 'node:http';
import https from 'node:https';

export interface HttpRequest {
  method: 'GET' | 'PUT' | 'POST';
  url: string;
  headers?: Record<string, string>;
  body?: Uint8Array;
  /** the pool the connection comes from (keep-alive); ignored for http: URLs */
  agent?: https.Agent;
  /** trusted CA certificates (PEM) for the server */
  ca?: string | string[];
  /** TLS client certificate and key (PEM) */
  cert?: string;
  key?: string;
  timeoutMs?: number;
  /** largest answer accepted (default 16 MiB) */
  maxResponseBytes?: number;
}

export interface HttpResponse {
  status: number;
  headers: IncomingHttpHeaders;
  body: Buffer;
}

/** A request that could not be completed (network, TLS, timeout, oversized answer); not an HTTP status. */
export class HttpTransportError extends Error {
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = 'HttpTransportError';
  }
}

export function httpRequest(req: HttpRequest): Promise<HttpResponse> {
  const url = new URL(req.url);
  const limit = req.maxResponseBytes ?? 16 * 1024 * 1024;
  const headers: Record<string, string> = { ...req.headers };
  if (req.body !== undefined) headers['content-length'] = String(req.body.byteLength);
  return new Promise<HttpResponse>((resolve, reject) => {
    const onResponse = (res: http.IncomingMessage) => {
      const chunks: Buffer[] = [];
      let size = 0;
      res.on('data', (chunk: Buffer) => {
        size += chunk.length;
        if (size > limit) {
          res.destroy();
          request.destroy(new HttpTransportError(`answer over ${limit} bytes`));
          return;
        }
        chunks.push(chunk);
      });
      res.on('end', () =>
        resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks) }),
      );
      res.on('error', (err) =>
        reject(new HttpTransportError(`reading the answer failed: ${err.message}`, { cause: err })),
      );
    };
    const common = { method: req.method, headers, timeout: req.timeoutMs ?? 30_000 };
    const request =
      url.protocol === 'https:'
        ? https.request(
            url,
            {
              ...common,
              ...(req.agent ? { agent: req.agent } : {}),
              ...(req.ca !== undefined ? { ca: req.ca } : {}),
              ...(req.cert !== undefined && req.key !== undefined ? { cert: req.cert, key: req.key } : {}),
            },
            onResponse,
          )
        : http.request(url, common, onResponse);
    request.on('timeout', () =>
      request.destroy(new HttpTransportError(`no answer within ${common.timeout} ms`)),
    );
    request.on('error', (err) =>
      reject(
        err instanceof HttpTransportError
          ? err
          : new HttpTransportError(`${req.method} ${url.origin}${url.pathname}: ${err.message}`, {
              cause: err,
            }),
      ),
    );
    request.end(
      req.body === undefined
        ? undefined
        : Buffer.from(req.body.buffer, req.body.byteOffset, req.body.byteLength),
    );
  });
}
