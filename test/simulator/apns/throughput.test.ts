import { expect } from 'chai';
import type { ApnsPush } from '../../../simulator/apns/gateway.ts';
import { subscribeRemote } from '../../../simulator/apns/gateway-client.ts';
import {
  devPki,
  makeProvider,
  mdmNote,
  newMagic,
  newToken,
  removeDevPki,
  shutdown,
  startGateway,
  waitFor,
} from './helpers.ts';

/** Measures (and reports, without asserting a rate) node-apn → gateway throughput for a fleet. */
describe('simulator/apns throughput (measured, not asserted)', () => {
  const TOKENS = 10_000;
  const CHUNK = 1000;

  before(async function () {
    this.timeout(120_000);
    await devPki();
  });
  after(removeDevPki);

  for (const mode of ['in-process', 'remote'] as const) {
    it(`${TOKENS} pushes through node-apn in chunks of ${CHUNK}, ${mode} subscribers`, async function () {
      this.timeout(120_000);
      const pki = await devPki();
      const { gateway, port, url } = await startGateway();
      const provider = makeProvider(pki, port);
      const tokens = Array.from({ length: TOKENS }, newToken);
      let delivered = 0;
      const onPush = (_p: ApnsPush): void => {
        delivered++;
      };
      const remote = mode === 'remote' ? subscribeRemote(url, tokens, onPush, { ca: pki.caCertPem }) : null;
      if (remote !== null) await remote.ready;
      else for (const t of tokens) gateway.subscribe(t, onPush);
      try {
        // warm-up: the TLS session and JIT
        await provider.send(mdmNote(newMagic(), pki.pushTopic), tokens.slice(0, CHUNK));
        await waitFor(() => delivered >= CHUNK, 'the warm-up pushes', 30_000);
        delivered = 0;
        const started = process.hrtime.bigint();
        let sent = 0;
        let failed = 0;
        for (let i = 0; i < TOKENS; i += CHUNK) {
          const r = await provider.send(mdmNote(newMagic(), pki.pushTopic), tokens.slice(i, i + CHUNK));
          sent += r.sent.length;
          failed += r.failed.length;
        }
        const acceptedMs = Number(process.hrtime.bigint() - started) / 1e6;
        await waitFor(() => delivered >= TOKENS, 'every push delivered', 30_000);
        const deliveredMs = Number(process.hrtime.bigint() - started) / 1e6;
        console.log(
          `      ${mode}: ${sent} accepted in ${acceptedMs.toFixed(0)} ms = ${Math.round((sent / acceptedMs) * 1000)} pushes/s; ` +
            `all delivered after ${deliveredMs.toFixed(0)} ms = ${Math.round((TOKENS / deliveredMs) * 1000)} pushes/s`,
        );
        expect(failed).to.equal(0);
        expect(sent).to.equal(TOKENS);
      } finally {
        await remote?.close();
        await shutdown(provider);
        await gateway.stop();
      }
    });
  }
});
