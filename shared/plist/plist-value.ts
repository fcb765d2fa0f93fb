/** A property-list value as decoded: `data` is a `Uint8Array`, `date` a `Date`, `integer`/`real` a `number`. */
export type PlistValue = string | number | boolean | Date | Uint8Array | PlistValue[] | PlistDict;

export interface PlistDict {
  [key: string]: PlistValue;
}

export interface PlistLimits {
  /** Largest accepted body, in bytes (UTF-8 bytes for a string body). */
  maxBytes: number;
  /** Deepest accepted nesting of `dict`/`array` containers (the root container is depth 1). */
  maxDepth: number;
}

export const DEFAULT_PLIST_LIMITS: PlistLimits = Object.freeze({ maxBytes: 10 * 1024 * 1024, maxDepth: 32 });

/** True for a `dict`: an object that is not an array, a `Date` or a typed array (`data`). */
export function isPlistDict(value: unknown): value is PlistDict {
  return (
    typeof value === 'object' &&
    value !== null &&
    !Array.isArray(value) &&
    !(value instanceof Date) &&
    !ArrayBuffer.isView(value)
  );
}
