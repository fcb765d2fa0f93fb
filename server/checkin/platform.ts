import type { Platform } from './store.ts';

const MAC_PRODUCT = /^(Mac|iMac|MacBook|Macmini|MacPro|MacStudio|VirtualMac|Xserve)/;

/** macOS devices send `Model`/`ModelName`; iOS and iPadOS only `ProductName` (e.g. `iPhone10,3`, `iPad2,5`). */
export function platformOf(msg: { ProductName?: string; Model?: string; ModelName?: string }): Platform {
  if (msg.Model !== undefined || msg.ModelName !== undefined) return 'macos';
  const product = msg.ProductName ?? '';
  if (MAC_PRODUCT.test(product)) return 'macos';
  if (product.startsWith('iPad')) return 'ipados';
  return 'ios';
}
