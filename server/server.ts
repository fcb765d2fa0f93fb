import { X509Certificate } from 'node:crypto';
import { promises as fs } from 'node:fs';
import https from 'node:https';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { ensureDevPki } from '../certs/dev-pki.ts';
import { createApp } from './app.ts';
import { SqlApiTokenStore } from './storage/api-token-store.ts';
import { CheckinService } from './checkin/checkin-service.ts';
import { SeenBatcher } from './checkin/seen-batcher.ts';
import { CommandService } from './commands/command-service.ts';
import { ConnectService } from './commands/connect-service.ts';
import { APPLE_VPP_URL, configWarnings, type Config } from './config.ts';
import { DeviceAssigner } from './directory/device-assigner.ts';
import { UserService } from './directory/user-service.ts';
import { EnrollmentService, type EnrollmentPki } from './enrollment/enrollment-service.ts';
import { EventBus } from './events.ts';
import { JobRunner } from './jobs/job-runner.ts';
import type { Logger } from './log.ts';
import { ApnsPusher } from './push/apns-pusher.ts';
import { apnsEndpoint, NodeApnsSender } from './push/apns-sender.ts';
import { PushCertificateService } from './push/push-certificate-service.ts';
import { newAdminToken, newSecretKey, readOrCreateSecret } from './secrets.ts';
import { openDatabase, type Database } from './storage/database.ts';
import {
  SqlDeviceAssignmentStore,
  SqlGroupStore,
  SqlSiteStore,
  SqlUserStore,
} from './storage/directory-store.ts';
import { migrate } from './storage/migrate.ts';
import { SqlPushCertificateStore, SqlPushQueueStore } from './storage/push-store.ts';
import { SqlCommandStore, SqlDeviceStore, SqlEnrollmentTokenStore } from './storage/stores.ts';
import { SqlJobStore } from './storage/job-store.ts';
import { SqlVppStore } from './storage/vpp-store.ts';
import { SecretBox } from './security/secret-box.ts';
import { DeviceIdentityVerifier } from './transport/device-identity.ts';
import { HttpAppsAndBooks } from './vpp/apple-client.ts';
import { LocationService } from './vpp/location-service.ts';
import { NotificationService } from './vpp/notification-service.ts';
import { RegistrationService } from './vpp/registration-service.ts';
import { VppWorker } from './vpp/vpp-worker.ts';
import { ChannelRegistry } from './invitations/channels.ts';
import { InvitationFanout } from './invitations/fanout.ts';
import { InvitationService } from './invitations/invitation-service.ts';
import { InvitationRegistrationTargets } from './invitations/registration-targets.ts';
import { SqlInvitationStore } from './storage/invitation-store.ts';
import { EmailChannel } from './mail/email-channel.ts';
import { SmtpMailer } from './mail/smtp-mailer.ts';
import { SqlEmailStore } from './storage/email-store.ts';
import { SqlCsrfTokens, SqlLoginThrottle } from './storage/registration-store.ts';
import { LdapAuthenticator } from './directory/ldap-authenticator.ts';
import { LocalPasswordChecker } from './directory/local-password-checker.ts';
import { LoginService } from './directory/login-service.ts';
import type { RegistrationRouterDeps } from './registration/registration-router.ts';
import { PromptAndSelfServiceChannel, SelfServiceOnlyChannel } from './delivery/channels.ts';
import { DevicePrompts } from './delivery/device-prompts.ts';
import { SelfService } from './delivery/self-service.ts';
import { SqlDeliveryStore } from './storage/delivery-store.ts';

export interface RunningServer {
  url: string;
  /** Development only: a reusable enrollment URL kept across restarts. */
  devEnrollUrl: string | null;
  port: number;
  adminToken: string;
  caCertPath: string;
  events: EventBus;
  db: Database;
  /** The durable APNs pusher (tests wake it and read its queue). */
  pusher: ApnsPusher;
  /** The durable job runner (Apps and Books work; later issues register their kinds on it). */
  jobs: JobRunner;
  /** Apps and Books: locations, registrations (`ensureRegistered`) and their background work. */
  vpp: { locations: LocationService; registrations: RegistrationService; worker: VppWorker };
  /**
   * Invitations: the admin service, the fan-out (jobs and events), the delivery channels (the email and
   * device channels register theirs here) and the registration page's view of codes.
   */
  invitations: {
    service: InvitationService;
    fanout: InvitationFanout;
    channels: ChannelRegistry;
    store: SqlInvitationStore;
    registrationTargets: InvitationRegistrationTargets;
  };
  /** The email channel (null when `MDM_SMTP_URL` is not set). */
  email: EmailChannel | null;
  /** Device delivery: `InviteToProgram` prompts (jobs, answers) and Self Service. */
  delivery: { prompts: DevicePrompts; store: SqlDeliveryStore; selfService: SelfService };
  close(): Promise<void>;
}

interface Pki {
  tlsCertPem: string;
  tlsKeyPem: string;
  caCertPath: string;
  enrollment: EnrollmentPki;
  /** the development push certificate, when APNs is not Apple's */
  devPush: { certPem: string; keyPem: string } | null;
  /** the development CA (when the development PKI is in use): trusted for a non-Apple APNs endpoint */
  devCaCertPem: string | null;
}

async function loadPki(config: Config): Promise<Pki> {
  if (config.tls && config.deviceCa) {
    const [tlsCertPem, tlsKeyPem, deviceCaCertPem, deviceCaKeyPem] = await Promise.all([
      fs.readFile(config.tls.certFile, 'utf8'),
      fs.readFile(config.tls.keyFile, 'utf8'),
      fs.readFile(config.deviceCa.certFile, 'utf8'),
      fs.readFile(config.deviceCa.keyFile, 'utf8'),
    ]);
    return {
      tlsCertPem,
      tlsKeyPem,
      caCertPath: config.deviceCa.certFile,
      enrollment: { deviceCaCertPem, deviceCaKeyPem, profileCaCertPem: deviceCaCertPem, signer: null },
      devPush: null,
      devCaCertPem: null,
    };
  }
  const dir = path.join(config.dataDir, 'certs');
  const hostname = new URL(config.publicUrl).hostname.replace(/^\[|\]$/g, '');
  const pki = await ensureDevPki(dir, { hostnames: [hostname] });
  return {
    tlsCertPem: config.tls ? await fs.readFile(config.tls.certFile, 'utf8') : pki.serverCertPem,
    tlsKeyPem: config.tls ? await fs.readFile(config.tls.keyFile, 'utf8') : pki.serverKeyPem,
    caCertPath: path.join(dir, 'ca.pem'),
    enrollment: {
      deviceCaCertPem: pki.deviceCaCertPem,
      deviceCaKeyPem: pki.deviceCaKeyPem,
      profileCaCertPem: pki.caCertPem,
      signer: { certPem: pki.serverCertPem, keyPem: pki.serverKeyPem, chainPems: [pki.caCertPem] },
    },
    devPush: config.devPushAllowed ? { certPem: pki.pushCertPem, keyPem: pki.pushKeyPem } : null,
    devCaCertPem: pki.caCertPem,
  };
}

/** Starts the whole server from a validated configuration. The composition root of the process. */
export async function startServer(config: Config, log: Logger): Promise<RunningServer> {
  await fs.mkdir(config.dataDir, { recursive: true });
  const pki = await loadPki(config);
  const adminToken =
    config.adminToken ?? (await readOrCreateSecret(config.dataDir, 'admin-token', newAdminToken));
  // Once per start, and never a secret's value.
  for (const warning of configWarnings(config)) log.warn(warning);
  // Given, or kept in the data dir (generated on first start) in development and production alike.
  const secretBox = SecretBox.fromSecret(
    config.secretKey ?? (await readOrCreateSecret(config.dataDir, 'secret.key', newSecretKey)),
  );

  const db = await openDatabase(config.databaseUrl, { logger: log.child({ component: 'db' }) });
  const applied = await migrate(db, log.child({ component: 'migrate' }));
  if (applied.length > 0) log.info({ applied }, 'database migrated');

  const events = new EventBus();
  const devices = new SqlDeviceStore(db);
  const commands = new SqlCommandStore(db);
  const tokens = new SqlEnrollmentTokenStore(db);
  const seen = new SeenBatcher(devices, log.child({ component: 'seen' }));
  seen.start();
  const apns = apnsEndpoint(config.apnsUrl);
  const pushLog = log.child({ component: 'push' });
  // The push certificate in use (uploaded, else the development one) is also the profiles' topic.
  const pushCertificates = new PushCertificateService({
    store: new SqlPushCertificateStore(db),
    secretBox,
    development: pki.devPush,
    environment: apns.apple ? 'production' : 'sandbox',
    log: pushLog,
  });
  const apnsSender = new NodeApnsSender({
    apnsUrl: config.apnsUrl,
    extraCaPems: !apns.apple && pki.devCaCertPem ? [pki.devCaCertPem] : [],
    log: pushLog,
  });
  const pusher = new ApnsPusher({
    queue: new SqlPushQueueStore(db),
    devices,
    certificates: pushCertificates,
    sender: apnsSender,
    log: pushLog,
    options: { sweepMs: config.pushSweepSeconds * 1000 },
  });
  // Commands that waited for a new (or revived) push token go out when it arrives.
  events.on('enrollment.token_updated', ({ enrollmentId }) => {
    pusher
      .pushIfPending([enrollmentId])
      .catch((err: unknown) => pushLog.error({ err }, 'push request failed'));
  });
  const checkin = new CheckinService({ devices, events, log: log.child({ component: 'checkin' }) });
  const connect = new ConnectService({
    devices,
    commands,
    checkin,
    events,
    log: log.child({ component: 'connect' }),
    seen: (udid) => seen.seen(udid),
  });
  const commandService = new CommandService({
    devices,
    commands,
    pusher,
    events,
    log: log.child({ component: 'commands' }),
  });
  const users = new SqlUserStore(db);
  const directory = {
    sites: new SqlSiteStore(db),
    users,
    groups: new SqlGroupStore(db),
    userService: new UserService({ users }),
  };
  const deviceAssigner = new DeviceAssigner({
    devices,
    users,
    assignments: new SqlDeviceAssignmentStore(db),
    log: log.child({ component: 'directory' }),
    events,
  });
  // A Mac user channel whose short name is a known username assigns an unassigned device.
  deviceAssigner.listen(events);
  let devEnrollToken: string | null = null;
  if (config.env === 'development') {
    devEnrollToken = await readOrCreateSecret(config.dataDir, 'dev-enrollment-token', newAdminToken);
    if (!(await tokens.get(devEnrollToken))) {
      await tokens.create({ token: devEnrollToken, expiresAt: null, maxUses: null, siteId: null });
    }
  }
  const verifier = new DeviceIdentityVerifier(new X509Certificate(pki.enrollment.deviceCaCertPem), {
    trustProxyCertHeader: config.trustProxyCertHeader,
  });

  const server = https.createServer({
    cert: pki.tlsCertPem,
    key: pki.tlsKeyPem,
    // Devices may present their identity as a TLS client certificate; we verify it ourselves.
    requestCert: true,
    rejectUnauthorized: false,
    ca: [pki.enrollment.deviceCaCertPem],
  });
  server.keepAliveTimeout = 65_000;
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(config.port, config.host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const port = (server.address() as AddressInfo).port;
  // Port 0 (tests): the public URL takes the port the system chose.
  const url = config.port === 0 ? config.publicUrl.replace(/:0$/, `:${port}`) : config.publicUrl;
  const enrollment = new EnrollmentService({
    tokens,
    sites: directory.sites,
    pki: pki.enrollment,
    topics: pushCertificates,
    publicUrl: url,
    log: log.child({ component: 'enrollment' }),
  });
  // ---- Apps and Books (volume purchasing) ----
  const vppLog = log.child({ component: 'vpp' });
  const jobs = new JobRunner({ store: new SqlJobStore(db), log: log.child({ component: 'jobs' }) });
  const vppStore = new SqlVppStore(db);
  const vppIsApple = new URL(config.vppUrl).host === new URL(APPLE_VPP_URL).host;
  const apple = new HttpAppsAndBooks({
    baseUrl: config.vppUrl,
    // The simulator's certificate comes from the development CA.
    extraCaPems: !vppIsApple && pki.devCaCertPem ? [pki.devCaCertPem] : [],
    log: vppLog,
  });
  const locations = new LocationService({
    store: vppStore,
    apple,
    sealer: secretBox,
    sites: directory.sites,
    jobs,
    events,
    log: vppLog,
    publicUrl: url,
    mdmInfo: { id: secretBox.deriveId('vpp-mdm-info'), name: 'vpp-mdm' },
  });
  const registrations = new RegistrationService({
    store: vppStore,
    users,
    locations,
    apple,
    jobs,
    events,
    log: vppLog,
  });
  const notifications = new NotificationService({ store: vppStore, locations, jobs, events, log: vppLog });
  const vppWorker = new VppWorker({
    store: vppStore,
    apple,
    locations,
    jobs,
    events,
    log: vppLog,
    options: { syncIntervalMs: config.vppSyncSeconds * 1000 },
  });
  vppWorker.register(jobs);
  // A deleted user's registrations are retired at Apple too (durable jobs, after the delete).
  directory.userService.onDelete({
    before: (userId) => registrations.knownAtApple(userId),
    after: async (userId, known) => {
      try {
        await registrations.retireAtApple(known);
      } catch (err) {
        // The user is gone either way: the sync counts the leftover users at Apple as unknown.
        vppLog.error({ err, userId }, 'could not queue retiring the deleted user at Apple');
      }
    },
  });
  // ---- invitations ----
  const invitationLog = log.child({ component: 'invitations' });
  const invitationStore = new SqlInvitationStore(db);
  const invitationChannels = new ChannelRegistry();
  const invitationFanout = new InvitationFanout({
    store: invitationStore,
    users,
    groups: directory.groups,
    locations: vppStore,
    registrations,
    jobs,
    channels: invitationChannels,
    publicUrl: url,
    log: invitationLog,
  });
  invitationFanout.register(jobs);
  invitationFanout.listen(events);
  const invitationService = new InvitationService({
    store: invitationStore,
    commands,
    users,
    groups: directory.groups,
    locations: vppStore,
    jobs,
    requirements: {
      smtpConfigured: config.smtpUrl !== null,
      pushCertificatePresent: async () => (await pushCertificates.active()) !== null,
    },
    log: invitationLog,
  });
  // ---- email invitations (when SMTP is configured) and the registration page ----
  const mailLog = log.child({ component: 'mail' });
  const mailer = config.smtpUrl
    ? new SmtpMailer({ url: config.smtpUrl, mailFrom: config.mailFrom, log: mailLog })
    : null;
  let emailChannel: EmailChannel | null = null;
  if (mailer) {
    emailChannel = new EmailChannel({
      store: new SqlEmailStore(db),
      mailer,
      jobs,
      reporter: {
        report: (reports) => invitationStore.report(reports, new Date()),
        setDevices: (usageId, devices, now) => invitationStore.setDevices(usageId, devices, now),
      },
      invitations: invitationStore,
      publicUrl: url,
      ldapConfigured: config.ldap !== null,
      log: mailLog,
      options: { messagesPerSecond: config.mailRate },
    });
    emailChannel.register(jobs);
    invitationChannels.register(emailChannel);
  }
  // ---- device delivery: InviteToProgram prompts and Self Service (both device methods) ----
  const deliveryLog = log.child({ component: 'delivery' });
  const deliveryStore = new SqlDeliveryStore(db);
  const deliveryReporter = {
    report: (reports: Parameters<SqlInvitationStore['report']>[0]) =>
      invitationStore.report(reports, new Date()),
    setDevices: (...args: Parameters<SqlInvitationStore['setDevices']>) =>
      invitationStore.setDevices(...args),
  };
  const devicePrompts = new DevicePrompts({
    store: deliveryStore,
    commands,
    pusher,
    reporter: deliveryReporter,
    jobs,
    devices,
    events,
    log: deliveryLog,
  });
  devicePrompts.register(jobs);
  devicePrompts.listen(events);
  invitationChannels.register(new PromptAndSelfServiceChannel(devicePrompts));
  invitationChannels.register(new SelfServiceOnlyChannel(deliveryStore, deliveryReporter));
  const selfService = new SelfService({
    devices,
    store: deliveryStore,
    reporter: deliveryReporter,
    log: deliveryLog,
  });
  const registrationTargets = new InvitationRegistrationTargets({ store: invitationStore });
  const registrationLog = log.child({ component: 'registration' });
  const registration: RegistrationRouterDeps = {
    targets: registrationTargets,
    login: new LoginService({
      ldap: config.ldap ? new LdapAuthenticator(config.ldap) : null,
      local: new LocalPasswordChecker(users),
      log: registrationLog,
    }),
    // In the database, so that every instance shares the forms' tokens and the attempt counts.
    csrf: new SqlCsrfTokens(db),
    throttle: new SqlLoginThrottle(db),
    log: registrationLog,
  };
  const app = createApp({
    log: log.child({ component: 'http' }),
    adminToken,
    maxBodyBytes: config.maxBodyBytes,
    verifier,
    checkin,
    connect,
    enrollment,
    devices,
    commands,
    commandService,
    deviceAssigner,
    directory,
    push: { certificates: pushCertificates, pusher },
    vpp: { locations, registrations, notifications, users },
    invitations: { invitations: invitationService, publicUrl: url, log: invitationLog },
    registration,
    selfService,
    apiTokens: new SqlApiTokenStore(db),
    siteScope: {
      sites: directory.sites,
      users,
      locations: vppStore,
      invitations: invitationStore,
      devices,
    },
  });
  server.on('request', app);
  pushCertificates.start();
  pusher.start();
  jobs.start();
  devicePrompts
    .scheduleAll()
    .catch((err: unknown) => deliveryLog.error({ err }, 'could not schedule the device prompts work'));
  invitationFanout
    .scheduleAll()
    .catch((err: unknown) => invitationLog.error({ err }, 'could not schedule the invitations work'));
  vppWorker
    .scheduleAll()
    .catch((err: unknown) => vppLog.error({ err }, "could not schedule the locations' work"));
  log.info({ port, publicUrl: url, env: config.env }, 'server listening');

  return {
    url,
    devEnrollUrl: devEnrollToken ? enrollment.enrollUrl(devEnrollToken) : null,
    port,
    adminToken,
    caCertPath: pki.caCertPath,
    events,
    db,
    pusher,
    jobs,
    vpp: { locations, registrations, worker: vppWorker },
    invitations: {
      service: invitationService,
      fanout: invitationFanout,
      channels: invitationChannels,
      store: invitationStore,
      registrationTargets,
    },
    email: emailChannel,
    delivery: { prompts: devicePrompts, store: deliveryStore, selfService },
    async close() {
      await new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      });
      await seen.stop();
      await pusher.stop();
      await apnsSender.close();
      pushCertificates.stop();
      await jobs.stop();
      await devicePrompts.stop();
      await mailer?.close();
      apple.close();
      await db.close();
    },
  };
}
