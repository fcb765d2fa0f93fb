/**
 * The few admin API calls the simulator needs to give its users a server-side existence: create a user
 * (or find the one a previous run made) and assign a device to them. See api.md, "Admin REST API".
 */
import type https from 'node:https';
import { z } from 'zod';
import { httpRequest } from '../device/http-client.ts';
import type { HttpResponse } from '../device/http-client.ts';

const userAnswer = z.object({
  id: z.union([z.string().min(1), z.number()]).transform(String),
  username: z.string(),
});
const userPage = z.object({ items: z.array(userAnswer), nextCursor: z.string().optional() });

export class AdminApiError extends Error {
  constructor(
    readonly operation: string,
    readonly status: number,
    readonly responseText: string,
  ) {
    super(`${operation}: HTTP ${status}${responseText ? ` ${responseText.slice(0, 200).trim()}` : ''}`);
    this.name = 'AdminApiError';
  }
}

export interface NewDirectoryUser {
  username: string;
  fullName?: string;
  email?: string;
}

export interface AdminDirectoryClientOptions {
  /** the server's URL, e.g. `https://localhost:8443` */
  server: string;
  adminToken: string;
  ca: string | string[];
  agent?: https.Agent;
  timeoutMs?: number;
}

export class AdminDirectoryClient {
  private readonly base: string;

  constructor(private readonly options: AdminDirectoryClientOptions) {
    this.base = `${options.server.replace(/\/+$/, '')}/api/v1`;
  }

  /**
   * `POST /users`; when the username is taken (`409`, e.g. made by an earlier run), the existing user.
   * Answers the user's id and whether it was created now.
   */
  async ensureUser(user: NewDirectoryUser): Promise<{ id: string; created: boolean }> {
    const res = await this.call('POST', '/users', user);
    if (res.status === 201 || res.status === 200) {
      return { id: this.parse('POST /users', res, userAnswer).id, created: true };
    }
    if (res.status !== 409) throw this.error('POST /users', res);
    const existing = await this.findUser(user.username);
    if (!existing) throw this.error('POST /users (taken, but not found by name)', res);
    return { id: existing, created: false };
  }

  /** The id of the user with exactly this username (case-insensitive), or null. */
  async findUser(username: string): Promise<string | null> {
    let cursor: string | undefined;
    for (let page = 0; page < 100; page++) {
      const q = new URLSearchParams({ q: username, limit: '1000', ...(cursor ? { cursor } : {}) });
      const res = await this.call('GET', `/users?${q.toString()}`);
      if (res.status !== 200) throw this.error('GET /users', res);
      const body = this.parse('GET /users', res, userPage);
      const hit = body.items.find((u) => u.username.toLowerCase() === username.toLowerCase());
      if (hit) return hit.id;
      if (!body.nextCursor) return null;
      cursor = body.nextCursor;
    }
    return null;
  }

  /** `PUT /devices/{udid}/user`. */
  async assignDevice(udid: string, userId: string): Promise<void> {
    const res = await this.call('PUT', `/devices/${encodeURIComponent(udid)}/user`, { userId });
    if (res.status !== 200 && res.status !== 204) throw this.error('PUT /devices/{udid}/user', res);
  }

  private call(method: 'GET' | 'POST' | 'PUT', path: string, body?: unknown): Promise<HttpResponse> {
    return httpRequest({
      method,
      url: `${this.base}${path}`,
      headers: {
        authorization: `Bearer ${this.options.adminToken}`,
        accept: 'application/json',
        ...(body !== undefined ? { 'content-type': 'application/json' } : {}),
      },
      ...(body !== undefined ? { body: Buffer.from(JSON.stringify(body)) } : {}),
      ca: this.options.ca,
      ...(this.options.agent ? { agent: this.options.agent } : {}),
      timeoutMs: this.options.timeoutMs ?? 30_000,
    });
  }

  private parse<T>(operation: string, res: HttpResponse, schema: z.ZodType<T>): T {
    let json: unknown;
    try {
      json = JSON.parse(res.body.toString('utf8'));
    } catch {
      throw new AdminApiError(`${operation} (not JSON)`, res.status, '');
    }
    const r = schema.safeParse(json);
    if (!r.success) throw new AdminApiError(`${operation} (unexpected answer)`, res.status, r.error.message);
    return r.data;
  }

  private error(operation: string, res: HttpResponse): AdminApiError {
    return new AdminApiError(operation, res.status, res.body.toString('utf8'));
  }
}
