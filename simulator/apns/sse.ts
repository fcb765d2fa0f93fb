/**
 * The wire format of the gateway's subscription stream (server-sent events over HTTP/2), shared by the
 * gateway and `gateway-client.ts`. See README.md in this folder for the whole protocol.
 */
import { z } from 'zod';
import { deviceTokenSchema } from './faults.ts';

export const SUBSCRIPTIONS_PATH = '/sim/subscriptions';
export const MAX_TOKENS_PER_REQUEST = 200_000;

export const createSubscriptionSchema = z
  .object({ tokens: z.array(deviceTokenSchema).max(MAX_TOKENS_PER_REQUEST) })
  .strict();
export const updateSubscriptionSchema = z
  .object({
    add: z.array(deviceTokenSchema).max(MAX_TOKENS_PER_REQUEST).optional(),
    remove: z.array(deviceTokenSchema).max(MAX_TOKENS_PER_REQUEST).optional(),
  })
  .strict();
export const subscriptionAnswerSchema = z.object({ id: z.string().min(1), tokens: z.number().int() });
export type SubscriptionAnswer = z.infer<typeof subscriptionAnswerSchema>;

export const pushEventSchema = z.object({
  token: z.string(),
  mdm: z.string(),
  topic: z.string(),
  id: z.string(),
});
export const readyEventSchema = subscriptionAnswerSchema;

export function sseEvent(event: string, data: unknown, id?: string): string {
  return `event: ${event}\n${id === undefined ? '' : `id: ${id}\n`}data: ${JSON.stringify(data)}\n\n`;
}

export const SSE_KEEPALIVE = ': keepalive\n\n';

export interface SseMessage {
  event: string;
  data: string;
  id: string | null;
}

/** Incremental parser of an event stream: feed text chunks, get whole events. */
export class SseParser {
  private buffer = '';
  private event = '';
  private data: string[] = [];
  private id: string | null = null;

  push(chunk: string, onMessage: (m: SseMessage) => void): void {
    this.buffer += chunk;
    let nl: number;
    while ((nl = this.buffer.indexOf('\n')) >= 0) {
      let line = this.buffer.slice(0, nl);
      this.buffer = this.buffer.slice(nl + 1);
      if (line.endsWith('\r')) line = line.slice(0, -1);
      if (line === '') {
        if (this.data.length > 0 || this.event !== '')
          onMessage({
            event: this.event === '' ? 'message' : this.event,
            data: this.data.join('\n'),
            id: this.id,
          });
        this.event = '';
        this.data = [];
        this.id = null;
        continue;
      }
      if (line.startsWith(':')) continue;
      const colon = line.indexOf(':');
      const field = colon < 0 ? line : line.slice(0, colon);
      let value = colon < 0 ? '' : line.slice(colon + 1);
      if (value.startsWith(' ')) value = value.slice(1);
      if (field === 'event') this.event = value;
      else if (field === 'data') this.data.push(value);
      else if (field === 'id') this.id = value;
    }
  }
}
