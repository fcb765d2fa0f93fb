import https from 'node:https';

export interface AdminAnswer {
  status: number;
  json: unknown;
}

/** A caller of the server's admin API (`/api/v1`, bearer token, the server's CA) for the benchmarks. */
export function adminApi(
  url: string,
  ca: string,
  token: string,
): (method: string, route: string, body?: unknown) => Promise<AdminAnswer> {
  return (method, route, body) =>
    new Promise<AdminAnswer>((resolve, reject) => {
      const payload = body === undefined ? undefined : JSON.stringify(body);
      const req = https.request(
        new URL(`/api/v1${route}`, url),
        {
          method,
          ca,
          headers: {
            authorization: `Bearer ${token}`,
            ...(payload
              ? { 'content-type': 'application/json', 'content-length': Buffer.byteLength(payload) }
              : {}),
          },
        },
        (res) => {
          let text = '';
          res.on('data', (c: Buffer) => (text += c.toString()));
          res.on('end', () =>
            resolve({ status: res.statusCode ?? 0, json: text ? (JSON.parse(text) as unknown) : null }),
          );
        },
      );
      req.on('error', reject);
      req.end(payload);
    });
}
