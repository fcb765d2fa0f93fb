import type { z } from 'zod';
import { ProtocolError } from './protocol-error.ts';

/** The first zod issue as an `invalid_message` ProtocolError naming the offending key. */
export function invalidMessage(what: string, error: z.ZodError): ProtocolError {
  const issue = error.issues[0];
  const field = issue && issue.path.length > 0 ? issue.path.map(String).join('.') : undefined;
  const detail = issue ? `${field ?? '(root)'}: ${issue.message}` : 'invalid';
  return new ProtocolError('invalid_message', `${what}: ${detail}`, { field, cause: error });
}
