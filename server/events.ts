import { EventEmitter } from 'node:events';

/** In-process domain events. Durable work never depends on them alone (see docs/architecture.md). */
export interface DomainEvents {
  'device.authenticated': { udid: string };
  'device.enrolled': { udid: string };
  'enrollment.token_updated': { enrollmentId: string; udid: string; first: boolean };
  'device.checked_out': { udid: string };
  /** A device was assigned to a directory user (`null`: unassigned), by an admin or automatically. */
  'device.assigned': { udid: string; userId: string | null };
  'command.queued': { udid: string; enrollmentIds: string[]; commandUuid: string; requestType: string };
  'command.result': {
    udid: string;
    enrollmentId: string;
    commandUuid: string;
    status: 'acknowledged' | 'error' | 'command_format_error' | 'not_now';
    report: Record<string, unknown>;
  };
  /** Apps and Books: a location's site changed (invitation scopes are pruned to the new site). */
  'location.site_changed': { locationId: string; previousSiteId: string | null; siteId: string | null };
  'location.deleted': { locationId: string };
  /** Apple gave these users an invite code (`Registered`): invitations can go out. */
  'registration.registered': { locationId: string; userIds: string[] };
  /** The user accepted (Apple `Associated`, from a notification, the sync or a lookup). */
  'registration.associated': { userId: string; locationId: string; idHash: string };
  'registration.failed': {
    locationId: string;
    userIds: string[];
    errorNumber: number | null;
    errorMessage: string;
  };
  'registration.retired': { userId: string; locationId: string };
}

export class EventBus {
  private readonly emitter = new EventEmitter();

  constructor() {
    this.emitter.setMaxListeners(100);
  }

  on<K extends keyof DomainEvents>(name: K, listener: (payload: DomainEvents[K]) => void): () => void {
    this.emitter.on(name, listener);
    return () => this.emitter.off(name, listener);
  }

  emit<K extends keyof DomainEvents>(name: K, payload: DomainEvents[K]): void {
    this.emitter.emit(name, payload);
  }
}
