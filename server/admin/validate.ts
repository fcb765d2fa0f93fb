import { z } from 'zod';
import { BadRequestError } from '../errors.ts';

/** Parses input with a zod schema; a failure is a 400 whose details name every bad field. */
export function parse<S extends z.ZodType>(schema: S, input: unknown, where = 'body'): z.output<S> {
  const result = schema.safeParse(input);
  if (result.success) return result.data;
  const details: Record<string, string> = {};
  for (const issue of result.error.issues) {
    const key = issue.path.length > 0 ? issue.path.map(String).join('.') : where;
    details[key] ??= issue.message;
  }
  throw new BadRequestError(`invalid ${where}`, details);
}

/** The query of every admin list: `limit` (default 100, 1..1000), an opaque `cursor`, a `q` filter. */
export const listQuery = z.object({
  limit: z.coerce.number().int().min(1).max(1000).default(100),
  cursor: z.string().min(1).max(1000).optional(),
  q: z.string().max(200).optional(),
});
