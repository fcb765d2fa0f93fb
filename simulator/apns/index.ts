export { ApnsGateway, DEFAULT_APNS_GATEWAY_PORT, MAX_PAYLOAD_BYTES } from './gateway.ts';
export type {
  ApnsEnvironment,
  ApnsGatewayEvents,
  ApnsGatewayOptions,
  ApnsGatewayStats,
  ApnsPush,
  ApnsReason,
  FaultPatch,
  FaultsView,
  PendingPush,
  Rejection,
} from './gateway.ts';
export { subscribeRemote } from './gateway-client.ts';
export type { RemoteSubscription, SubscribeRemoteOptions } from './gateway-client.ts';
export { APNS_REASONS } from './reasons.ts';
