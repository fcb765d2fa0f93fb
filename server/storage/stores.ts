export { SqlCommandStore } from './command-store.ts';
export { SqlDeviceStore } from './device-store.ts';
export { SqlEnrollmentTokenStore } from './enrollment-token-store.ts';
