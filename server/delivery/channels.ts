/**
 * The two device delivery channels (see `server/invitations/channels.ts` for the contract):
 * - `prompt_and_self_service`: `InviteToProgram` on every eligible device of the user, after an APNs
 *   push (`DevicePrompts`), and the invitation listed in Self Service on each of the user's devices;
 * - `self_service_only`: no command, no push: the invitation is listed in Self Service on every device of
 *   the user, which makes the usage `sent` (a user with no device yet: `skipped` until one lists it).
 */
import type {
  DeliveryChannel,
  DeliveryOutcome,
  InvitationForDelivery,
  UsageForDelivery,
  UsageRef,
  UsageReport,
  UsageReporter,
  WithdrawReason,
} from '../invitations/channels.ts';
import type { DevicePrompts } from './device-prompts.ts';
import { NO_DEVICE } from './eligibility.ts';
import type { DeliveryStore } from './store.ts';

export class PromptAndSelfServiceChannel implements DeliveryChannel {
  readonly method = 'prompt_and_self_service' as const;

  constructor(private readonly prompts: DevicePrompts) {}

  deliver(inv: InvitationForDelivery, items: readonly UsageForDelivery[]): Promise<DeliveryOutcome[]> {
    return this.prompts.deliver(inv, items);
  }

  /** A new prompt where none is pending (one pending for the same invite code is kept). */
  resend(inv: InvitationForDelivery, items: readonly UsageForDelivery[]): Promise<DeliveryOutcome[]> {
    return this.prompts.deliver(inv, items);
  }

  withdraw(inv: InvitationForDelivery, items: readonly UsageRef[], reason: WithdrawReason): Promise<void> {
    return this.prompts.withdraw(inv, items, reason);
  }
}

export class SelfServiceOnlyChannel implements DeliveryChannel {
  readonly method = 'self_service_only' as const;

  constructor(
    private readonly store: Pick<DeliveryStore, 'devicesOfUsers'>,
    private readonly reporter: UsageReporter,
    private readonly now: () => Date = () => new Date(),
  ) {}

  /**
   * Nothing to send: the invitation is listed in Self Service from now on, which is what `sent` means for
   * this method (api.md: "listed in Self Service"). Users with a device are reported `sent` here, through
   * the reporter, which never moves a usage back (a device may list and tap it before the fan-out records
   * this batch); the outcome answered is `pending`, which keeps that `sent`. Users with no device are
   * `skipped` (`no_device`) until one of their devices lists it.
   */
  async deliver(_inv: InvitationForDelivery, items: readonly UsageForDelivery[]): Promise<DeliveryOutcome[]> {
    const devices = await this.store.devicesOfUsers([...new Set(items.map((i) => i.userId))]);
    const count = new Map<string, number>();
    // Enrolled devices only: Self Service answers a checked-out device's certificate with 403.
    for (const d of devices) {
      if (d.userId !== null && d.enrolled) count.set(d.userId, (count.get(d.userId) ?? 0) + 1);
    }
    const at = this.now();
    const available = (n: number) => `Listed in Self Service on ${n} device${n === 1 ? '' : 's'}`;
    const reports: UsageReport[] = [];
    for (const item of items) {
      const n = count.get(item.userId) ?? 0;
      if (n > 0) reports.push({ usageId: item.usageId, status: 'sent', lastAction: available(n), at });
    }
    if (reports.length > 0) await this.reporter.report(reports);
    return items.map((item) => {
      const n = count.get(item.userId) ?? 0;
      return n > 0
        ? { usageId: item.usageId, status: 'pending' as const, lastAction: available(n), at }
        : {
            usageId: item.usageId,
            status: 'skipped' as const,
            reason: NO_DEVICE,
            lastAction: 'Available in Self Service, but the user has no device yet',
          };
    });
  }

  /** Self Service keeps listing it: the same as delivering. */
  resend(inv: InvitationForDelivery, items: readonly UsageForDelivery[]): Promise<DeliveryOutcome[]> {
    return this.deliver(inv, items);
  }

  /** Nothing to take back: Self Service lists only live, unregistered-or-registered usage rows. */
  async withdraw(): Promise<void> {}
}
