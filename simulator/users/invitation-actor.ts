/**
 * How a simulated user acts on an invitation URL: over HTTP, as a browser does (open the URL, follow
 * redirects, post the simulated Apple page's form with an Apple ID), or in-process when the simulated
 * Apps and Books service runs in the same process.
 */
import type https from 'node:https';
import { httpRequest } from '../device/http-client.ts';
import type { HttpResponse } from '../device/http-client.ts';
import type { AcceptResult, DeclineResult } from '../apple-vpp/vpp-state.ts';

/** What the page (or the service) answered. */
export type ActOutcome =
  | 'associated'
  | 'already_associated'
  | 'kept_first_apple_id'
  | 'declined'
  | 'retired'
  | 'not_found'
  | 'error';

export interface ActResult {
  outcome: ActOutcome;
  /** the HTTP status of the last answer (0 in-process or without an answer) */
  status: number;
  /** for `error`: what went wrong */
  detail?: string;
}

export interface InvitationActor {
  /** Opens the invitation, signs in with `appleId` and accepts. */
  accept(invitationUrl: string, appleId: string): Promise<ActResult>;
  /** Opens the invitation and declines. */
  decline(invitationUrl: string): Promise<ActResult>;
}

/** The invite code in an Apple invitation URL (`?inviteCode=…`), or null. */
export function inviteCodeOf(invitationUrl: string): string | null {
  try {
    const code = new URL(invitationUrl).searchParams.get('inviteCode');
    return code === null || code === '' ? null : code;
  } catch {
    return null;
  }
}

function unescapeHtml(s: string): string {
  return s.replace(/&(amp|lt|gt|quot|#39);/g, (_m, e: string) =>
    e === 'amp' ? '&' : e === 'lt' ? '<' : e === 'gt' ? '>' : e === 'quot' ? '"' : "'",
  );
}

export interface HttpInvitationActorOptions {
  /** CA certificate(s) (PEM) trusted for the Apple service (and the MDM server, for redirects from it) */
  ca?: string | string[];
  agent?: https.Agent;
  timeoutMs?: number;
  /** redirects followed when opening the URL (default 5) */
  maxRedirects?: number;
  userAgent?: string;
}

const REDIRECTS = new Set([301, 302, 303, 307, 308]);

/** A browser, as far as the simulated invitation page needs one. */
export class HttpInvitationActor implements InvitationActor {
  constructor(private readonly options: HttpInvitationActorOptions = {}) {}

  accept(invitationUrl: string, appleId: string): Promise<ActResult> {
    return this.act(invitationUrl, { appleId, action: 'accept' });
  }

  decline(invitationUrl: string): Promise<ActResult> {
    return this.act(invitationUrl, { action: 'decline' });
  }

  private async act(invitationUrl: string, form: Record<string, string>): Promise<ActResult> {
    try {
      const page = await this.open(invitationUrl);
      if (page.res.status !== 200) return fromStatus(page.res.status, 'opening the invitation');
      const html = page.res.body.toString('utf8');
      if (!/name="appleId"/.test(html)) {
        return { outcome: 'error', status: 200, detail: `${page.url} is not the invitation page` };
      }
      const action = /<form\b[^>]*\baction="([^"]*)"/i.exec(html)?.[1];
      const target = action === undefined ? page.url : new URL(unescapeHtml(action), page.url).toString();
      const res = await this.request('POST', target, Buffer.from(new URLSearchParams(form).toString()));
      if (res.status === 200) {
        return { outcome: form.action === 'decline' ? 'declined' : 'associated', status: 200 };
      }
      return fromStatus(res.status, 'posting the form');
    } catch (err) {
      return { outcome: 'error', status: 0, detail: (err as Error).message };
    }
  }

  /** GET, following redirects (e.g. from the MDM server's registration link to Apple's page). */
  private async open(url: string): Promise<{ url: string; res: HttpResponse }> {
    let current = url;
    for (let hops = 0; ; hops++) {
      const res = await this.request('GET', current);
      const location = res.headers.location;
      if (!REDIRECTS.has(res.status) || location === undefined) return { url: current, res };
      if (hops >= (this.options.maxRedirects ?? 5)) throw new Error(`too many redirects from ${url}`);
      current = new URL(location, current).toString();
    }
  }

  private request(method: 'GET' | 'POST', url: string, body?: Buffer): Promise<HttpResponse> {
    return httpRequest({
      method,
      url,
      headers: {
        accept: 'text/html',
        'user-agent': this.options.userAgent ?? 'Simulated user (Safari)',
        ...(body ? { 'content-type': 'application/x-www-form-urlencoded' } : {}),
      },
      ...(body ? { body } : {}),
      ...(this.options.ca !== undefined ? { ca: this.options.ca } : {}),
      ...(this.options.agent ? { agent: this.options.agent } : {}),
      timeoutMs: this.options.timeoutMs ?? 30_000,
    });
  }
}

function fromStatus(status: number, what: string): ActResult {
  if (status === 404) return { outcome: 'not_found', status };
  if (status === 409) return { outcome: 'kept_first_apple_id', status };
  if (status === 410) return { outcome: 'retired', status };
  return { outcome: 'error', status, detail: `${what}: HTTP ${status}` };
}

/** The part of the simulated Apps and Books service an in-process actor uses. */
export interface InProcessInvitations {
  acceptInvitation(inviteCode: string, appleId: string): AcceptResult;
  declineInvitation(inviteCode: string): DeclineResult;
}

/** Acts through the service object itself (same process): the same outcome as the page, no HTTP. */
export class InProcessInvitationActor implements InvitationActor {
  constructor(private readonly service: InProcessInvitations) {}

  async accept(invitationUrl: string, appleId: string): Promise<ActResult> {
    const code = inviteCodeOf(invitationUrl);
    if (code === null) return { outcome: 'error', status: 0, detail: `no inviteCode in ${invitationUrl}` };
    try {
      return { outcome: this.service.acceptInvitation(code, appleId).result, status: 0 };
    } catch (err) {
      return { outcome: 'error', status: 0, detail: (err as Error).message };
    }
  }

  async decline(invitationUrl: string): Promise<ActResult> {
    const code = inviteCodeOf(invitationUrl);
    if (code === null) return { outcome: 'error', status: 0, detail: `no inviteCode in ${invitationUrl}` };
    const r = this.service.declineInvitation(code).result;
    return { outcome: r, status: 0 };
  }
}
