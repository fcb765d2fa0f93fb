import { X509Certificate } from 'node:crypto';
import { promises as fs } from 'node:fs';
import https from 'node:https';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { ensureDevPki } from '../certs/dev-pki.ts';
import { pushTopicOf } from '../shared/crypto/index.ts';
import { createApp } from './app.ts';
import { CheckinService } from './checkin/checkin-service.ts';
import { SeenBatcher } from './checkin/seen-batcher.ts';
import { CommandService } from './commands/command-service.ts';
import { ConnectService } from './commands/connect-service.ts';
import type { Pusher } from './commands/pusher.ts';
import type { Config } from './config.ts';
import { EnrollmentService, type EnrollmentPki, type TopicSource } from './enrollment/enrollment-service.ts';
import { EventBus } from './events.ts';
import type { Logger } from './log.ts';
import { newAdminToken, newSecretKey, readOrCreateSecret } from './secrets.ts';
import { openDatabase, type Database } from './storage/database.ts';
import { migrate } from './storage/migrate.ts';
import { SqlCommandStore, SqlDeviceStore, SqlEnrollmentTokenStore } from './storage/stores.ts';
import { DeviceIdentityVerifier } from './transport/device-identity.ts';

export interface RunningServer {
  url: string;
  /** Development only: a reusable enrollment URL kept across restarts. */
  devEnrollUrl: string | null;
  port: number;
  adminToken: string;
  caCertPath: string;
  events: EventBus;
  db: Database;
  close(): Promise<void>;
}

interface Pki {
  tlsCertPem: string;
  tlsKeyPem: string;
  caCertPath: string;
  enrollment: EnrollmentPki;
  devPushTopic: string | null;
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
      devPushTopic: null,
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
    devPushTopic: config.devPushAllowed ? (pushTopicOf(pki.pushCertPem) ?? pki.pushTopic) : null,
  };
}

/** Until APNs delivery lands (server/push), enqueued commands wait for the device's next connect. */
class NoPushYet implements Pusher {
  constructor(private readonly log: Logger) {}
  async pushEnrollments(enrollmentIds: string[]): Promise<void> {
    this.log.debug({ count: enrollmentIds.length }, 'push requested (APNs not configured)');
  }
}

/** Starts the whole server from a validated configuration. The composition root of the process. */
export async function startServer(config: Config, log: Logger): Promise<RunningServer> {
  await fs.mkdir(config.dataDir, { recursive: true });
  const pki = await loadPki(config);
  const adminToken =
    config.adminToken ?? (await readOrCreateSecret(config.dataDir, 'admin-token', newAdminToken));
  if (!config.secretKeyHex) await readOrCreateSecret(config.dataDir, 'secret.key', newSecretKey);

  const db = await openDatabase(config.databaseUrl, { logger: log.child({ component: 'db' }) });
  const applied = await migrate(db, log.child({ component: 'migrate' }));
  if (applied.length > 0) log.info({ applied }, 'database migrated');

  const events = new EventBus();
  const devices = new SqlDeviceStore(db);
  const commands = new SqlCommandStore(db);
  const tokens = new SqlEnrollmentTokenStore(db);
  const seen = new SeenBatcher(devices, log.child({ component: 'seen' }));
  seen.start();
  const topics: TopicSource = { currentTopic: async () => pki.devPushTopic };
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
    pusher: new NoPushYet(log.child({ component: 'push' })),
    events,
    log: log.child({ component: 'commands' }),
  });
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
    pki: pki.enrollment,
    topics,
    publicUrl: url,
    log: log.child({ component: 'enrollment' }),
  });
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
  });
  server.on('request', app);
  log.info({ port, publicUrl: url, env: config.env }, 'server listening');

  return {
    url,
    devEnrollUrl: devEnrollToken ? enrollment.enrollUrl(devEnrollToken) : null,
    port,
    adminToken,
    caCertPath: pki.caCertPath,
    events,
    db,
    async close() {
      await new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      });
      await seen.stop();
      await db.close();
    },
  };
}
