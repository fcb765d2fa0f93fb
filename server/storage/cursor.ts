import { BadRequestError } from '../errors.ts';

/**
 * Keyset pagination cursors: base64url of the JSON array of the last row's sort key. Opaque to
 * clients; a cursor that does not decode to the expected shape is a 400 `invalid_cursor`.
 */
export function encodeCursor(key: readonly (string | number)[]): string {
  return Buffer.from(JSON.stringify(key), 'utf8').toString('base64url');
}

export function invalidCursor(): BadRequestError {
  return new BadRequestError(
    'invalid cursor',
    { cursor: 'not a cursor returned by this list' },
    'invalid_cursor',
  );
}

function decode(cursor: string): unknown[] {
  let value: unknown;
  try {
    value = JSON.parse(Buffer.from(cursor, 'base64url').toString('utf8'));
  } catch {
    throw invalidCursor();
  }
  if (!Array.isArray(value)) throw invalidCursor();
  return value;
}

/** `[udid]` */
export function decodeStringCursor(cursor: string): string {
  const [key, ...rest] = decode(cursor);
  if (typeof key !== 'string' || rest.length > 0) throw invalidCursor();
  return key;
}

/** `[epoch ms, seq]` */
export function decodeTimeSeqCursor(cursor: string): { time: Date; seq: number } {
  const [time, seq, ...rest] = decode(cursor);
  if (typeof time !== 'number' || !Number.isSafeInteger(time) || rest.length > 0) throw invalidCursor();
  if (typeof seq !== 'number' || !Number.isSafeInteger(seq)) throw invalidCursor();
  return { time: new Date(time), seq };
}
