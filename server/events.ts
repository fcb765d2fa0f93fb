import { EventEmitter } from 'node:events';

/** In-process domain events. Durable work never depends on them alone (see docs/architecture.md). */
export interface DomainEvents {
  'device.authenticated': { udid: string };
  'device.enrolled': { udid: string };
  'enrollment.token_updated': { enrollmentId: string; udid: string; first: boolean };
  'device.checked_out': { udid: string };
  'command.queued': { udid: string; enrollmentIds: string[]; commandUuid: string; requestType: string };
  'command.result': {
    udid: string;
    enrollmentId: string;
    commandUuid: string;
    status: 'acknowledged' | 'error' | 'command_format_error' | 'not_now';
    report: Record<string, unknown>;
  };
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
