import { ConfigError, loadConfig } from './config.ts';
import { createLogger } from './log.ts';
import { startServer } from './server.ts';

async function main(): Promise<void> {
  let config;
  try {
    config = loadConfig(process.env);
  } catch (err) {
    if (err instanceof ConfigError) {
      console.error(err.message);
      process.exit(2);
    }
    throw err;
  }
  const log = createLogger(config.logLevel);
  const server = await startServer(config, log);
  if (config.env === 'development') {
    // Printed once for the person who started the server, on stdout and not through the log.
    console.log(
      [
        '',
        `  MDM server (development) at ${server.url}`,
        `  admin token:      ${server.adminToken}`,
        `  CA for clients:   ${server.caCertPath}`,
        `  enrollment URL:   ${server.devEnrollUrl ?? '(none)'}`,
        `  simulate devices: npm run simulate -- --devices 10 --connect`,
        '',
      ].join('\n'),
    );
  }
  let stopping = false;
  const stop = (signal: string) => {
    if (stopping) return;
    stopping = true;
    log.info({ signal }, 'shutting down');
    server.close().then(
      () => process.exit(0),
      (err: unknown) => {
        log.error({ err }, 'shutdown failed');
        process.exit(1);
      },
    );
  };
  process.on('SIGINT', () => stop('SIGINT'));
  process.on('SIGTERM', () => stop('SIGTERM'));
}

main().catch((err: unknown) => {
  const e = err as NodeJS.ErrnoException;
  if (e?.code === 'EADDRINUSE' || e?.code === 'EACCES') {
    console.error(`cannot listen: ${e.message} (set MDM_PORT / MDM_HOST)`);
  } else {
    console.error(err);
  }
  process.exit(1);
});
