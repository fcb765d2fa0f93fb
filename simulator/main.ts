/** `npm run simulate -- [options]`: see simulator/cli.ts (or `--help`). */
import { runSimulator } from './cli.ts';

/** Resolves on SIGINT/SIGTERM; keeps the process alive until then (signal listeners alone do not). */
const stop = () =>
  new Promise<void>((resolve) => {
    const keepAlive = setInterval(() => undefined, 1 << 30);
    const done = () => {
      clearInterval(keepAlive);
      resolve();
    };
    process.once('SIGINT', done);
    process.once('SIGTERM', done);
  });

const result = await runSimulator(process.argv.slice(2), {
  stdout: process.stdout,
  stderr: process.stderr,
  cwd: process.cwd(),
  stopSignal: stop,
});
process.exitCode = result.exitCode;
