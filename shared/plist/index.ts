export { decodePlist, decodePlistDict } from './decode-plist.ts';
export { encodePlist } from './encode-plist.ts';
export { PlistError } from './plist-error.ts';
export type { PlistErrorCode } from './plist-error.ts';
export { DEFAULT_PLIST_LIMITS, isPlistDict } from './plist-value.ts';
export type { PlistDict, PlistLimits, PlistValue } from './plist-value.ts';
