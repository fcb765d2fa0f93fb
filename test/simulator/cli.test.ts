import { expect } from 'chai';
import { parseCli, runSimulator, UsageError, USAGE } from '../../simulator/cli.ts';
import { ProgressReporter } from '../../simulator/load/progress.ts';
import { formatSummary } from '../../simulator/load/report.ts';
import { OperationStats, quantile, summarize } from '../../simulator/load/stats.ts';

class Buffered {
  text = '';
  constructor(readonly isTTY = false) {}
  write(chunk: string): boolean {
    this.text += chunk;
    return true;
  }
}

describe('simulator CLI and reporting', () => {
  it('has defaults for every flag', () => {
    expect(parseCli([])).to.deep.include({
      devices: 10,
      macosShare: 0.4,
      server: 'https://localhost:8443',
      dataDir: './data',
      stateDir: './.sim',
      concurrency: 16,
      connect: false,
      signature: 'sha256',
      stay: false,
      exit: false,
      apns: 'start',
      apnsPort: 2197,
      appleVpp: 'start',
      vppPort: 8444,
    });
  });

  it('refuses an --apns that is neither start, off nor a URL', () => {
    expect(() => parseCli(['--apns', 'sometimes'])).to.throw(UsageError, /--apns/);
    expect(() => parseCli(['--apple-vpp', 'maybe'])).to.throw(UsageError, /--apple-vpp/);
  });

  it('parses every flag', () => {
    const o = parseCli([
      '--devices',
      '500',
      '--macos-share',
      '0.25',
      '--server',
      'https://mdm.example:9443',
      '--data-dir',
      'd',
      '--ca',
      'ca.pem',
      '--admin-token',
      'tok',
      '--enroll-url',
      'https://mdm.example/mdm/enroll?token=x',
      '--state-dir',
      's',
      '--concurrency',
      '64',
      '--connect',
      '--signature',
      'sha1',
      '--tls-client-cert',
      '--seed',
      '3',
      '--timeout',
      '5000',
      '--json',
      '--stay',
      '--exit',
      '--apns',
      'https://127.0.0.1:2197',
      '--apns-port',
      '12197',
      '--apple-vpp',
      'off',
      '--vpp-port',
      '18444',
    ]);
    expect(o).to.deep.equal({
      devices: 500,
      macosShare: 0.25,
      server: 'https://mdm.example:9443',
      dataDir: 'd',
      ca: 'ca.pem',
      adminToken: 'tok',
      enrollUrl: 'https://mdm.example/mdm/enroll?token=x',
      stateDir: 's',
      concurrency: 64,
      connect: true,
      signature: 'sha1',
      tlsClientCert: true,
      seed: 3,
      timeout: 5000,
      json: true,
      stay: true,
      exit: true,
      apns: 'https://127.0.0.1:2197',
      apnsPort: 12197,
      appleVpp: 'off',
      vppPort: 18444,
      users: 0,
      devicesPerUser: { min: 1, max: 3 },
      accept: 0.8,
      ignore: 0.1,
      decline: 0.05,
      wrongAppleId: 0.05,
      acceptDelay: { min: 200, max: 2000 },
      notNow: 0.1,
      notNowTimes: { min: 1, max: 3 },
      selfServiceInterval: 5000,
      acceptVia: 'http',
      help: false,
    });
  });

  it('reports every bad flag at once', () => {
    let err: unknown;
    try {
      parseCli(['--devices', 'ten', '--macos-share', '1.5', '--server', 'ftp://x', '--signature', 'md5']);
    } catch (e) {
      err = e;
    }
    expect(err).to.be.instanceOf(UsageError);
    const msg = (err as Error).message;
    for (const flag of ['--devices', '--macos-share', '--server', '--signature'])
      expect(msg).to.include(flag);
    expect(() => parseCli(['--bogus'])).to.throw(UsageError);
    expect(() => parseCli(['--signature', 'none'])).to.throw(UsageError, /tls-client-cert/);
  });

  it('documents every flag in --help and exits 0; bad flags exit 2', async () => {
    const out = new Buffered();
    const r = await runSimulator(['--help'], { stdout: out, stderr: new Buffered(), cwd: '/' });
    expect(r.exitCode).to.equal(0);
    for (const flag of [
      '--devices',
      '--macos-share',
      '--server',
      '--data-dir',
      '--ca',
      '--admin-token',
      '--enroll-url',
      '--state-dir',
      '--concurrency',
      '--connect',
      '--signature',
      '--stay',
      '--exit',
      '--apns',
      '--apns-port',
      '--apple-vpp',
      '--vpp-port',
      '--help',
    ]) {
      expect(out.text).to.include(flag);
    }
    expect(USAGE).to.include('Exit status');
    const err = new Buffered();
    expect(
      (await runSimulator(['--devices', '-1'], { stdout: new Buffered(), stderr: err, cwd: '/' })).exitCode,
    ).to.equal(2);
    expect(err.text).to.include('--devices');
  });

  it('exits 2 with a hint when the server CA cannot be read', async () => {
    const err = new Buffered();
    const r = await runSimulator(['--data-dir', '/nonexistent-dir'], {
      stdout: new Buffered(),
      stderr: err,
      cwd: '/',
    });
    expect(r.exitCode).to.equal(2);
    expect(err.text).to.include('/nonexistent-dir/certs/ca.pem');
  });

  it('summarises latencies by nearest rank', () => {
    const samples = Array.from({ length: 100 }, (_, i) => i + 1);
    expect(quantile(samples, 0.5)).to.equal(50);
    expect(quantile(samples, 0.99)).to.equal(99);
    expect(summarize(samples)).to.deep.include({ count: 100, minMs: 1, maxMs: 100, p50Ms: 50, meanMs: 50.5 });
    expect(summarize([])).to.deep.include({ count: 0, p99Ms: 0 });
    const op = new OperationStats();
    op.record(0, 100);
    op.record(500, 500);
    op.fail('HTTP 403', 200, 10);
    expect(op.summary()).to.deep.include({ ok: 2, failed: 1, failures: { 'HTTP 403': 1 }, ratePerSecond: 2 });
  });

  it('prints a summary table with failures by reason', () => {
    const enroll = new OperationStats();
    enroll.record(0, 120);
    enroll.fail('enroll: HTTP 403 token expired', 0, 5);
    const text = formatSummary({
      devices: 2,
      byPlatform: { macos: 1, ios: 1, ipados: 0 },
      enrolled: 1,
      enroll: enroll.summary(),
      connect: new OperationStats().summary(),
      commands: { DeviceInformation: { Acknowledged: 1 } },
      failures: [{ udid: 'X', operation: 'enroll', reason: 'HTTP 403 token expired' }],
    });
    expect(text).to.include('devices: 2 (macOS 1, iOS 1, iPadOS 0), enrolled 1');
    expect(text).to.match(/^enroll\s+1\s+1\s+8\.3\/s\s+120\.0 ms/m);
    expect(text).to.include('DeviceInformation  Acknowledged 1');
    expect(text).to.match(/1 {2}enroll: HTTP 403 token expired/);
  });

  it('shows progress as periodic lines off a terminal and a bar on one', () => {
    let now = 0;
    const plain = new Buffered(false);
    const p = new ProgressReporter(plain, { intervalMs: 1000, now: () => now });
    p.update({ phase: 'enroll', done: 0, failed: 0, total: 10 });
    now = 100;
    p.update({ phase: 'enroll', done: 1, failed: 0, total: 10 });
    now = 1200;
    p.update({ phase: 'enroll', done: 5, failed: 1, total: 10 });
    now = 1300;
    p.update({ phase: 'enroll', done: 9, failed: 1, total: 10 });
    expect(plain.text.trim().split('\n')).to.deep.equal([
      'enrolling: 0/10 (0%) ok 0 failed 0 -',
      'enrolling: 6/10 (60%) ok 5 failed 1 5.0/s',
      'enrolling: 10/10 (100%) ok 9 failed 1 7.7/s',
    ]);
    const tty = new Buffered(true);
    const bar = new ProgressReporter(tty, { now: () => now });
    bar.update({ phase: 'connect', done: 10, failed: 0, total: 10 });
    expect(tty.text).to.match(/^\rconnecting \[#+\] 10\/10 failed 0 .*\x1b\[K\n$/);
  });
});
