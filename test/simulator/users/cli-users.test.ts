import { expect } from 'chai';
import { parseCli, runSimulator, UsageError, USAGE } from '../../../simulator/cli.ts';

class Buffered {
  text = '';
  readonly isTTY = false;
  write(chunk: string): boolean {
    this.text += chunk;
    return true;
  }
}

function usageError(argv: string[]): string {
  try {
    parseCli(argv);
  } catch (err) {
    expect(err).to.be.instanceOf(UsageError);
    return (err as Error).message;
  }
  throw new Error(`accepted: ${argv.join(' ')}`);
}

describe('simulator CLI: simulated users flags', function () {
  it('has users off by default, with the documented defaults', function () {
    expect(parseCli([])).to.deep.include({
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
    });
  });

  it('parses every users flag', function () {
    const o = parseCli([
      '--users',
      '40',
      '--devices-per-user',
      '2-4',
      '--accept',
      '0.5',
      '--ignore',
      '0.2',
      '--decline',
      '0.1',
      '--wrong-apple-id',
      '0.2',
      '--accept-delay',
      '0-50',
      '--not-now',
      '0.25',
      '--not-now-times',
      '2',
      '--self-service-interval',
      '0',
      '--accept-via',
      'in-process',
    ]);
    expect(o).to.deep.include({
      users: 40,
      devicesPerUser: { min: 2, max: 4 },
      accept: 0.5,
      ignore: 0.2,
      decline: 0.1,
      wrongAppleId: 0.2,
      acceptDelay: { min: 0, max: 50 },
      notNow: 0.25,
      notNowTimes: { min: 2, max: 2 },
      selfServiceInterval: 0,
      acceptVia: 'in-process',
    });
    // whatever the probabilities leave is ignoring: a sum below 1 is fine
    expect(
      parseCli(['--accept', '0.3', '--ignore', '0', '--decline', '0', '--wrong-apple-id', '0']).accept,
    ).to.equal(0.3);
    expect(
      parseCli(['--accept', '1', '--ignore', '0', '--decline', '0', '--wrong-apple-id', '0']).accept,
    ).to.equal(1);
  });

  it('refuses probabilities that add up to more than 1', function () {
    expect(usageError(['--accept', '0.9'])).to.match(/add up to 1\.1: at most 1/);
    expect(
      usageError(['--accept', '0.5', '--ignore', '0.5', '--decline', '0.01', '--wrong-apple-id', '0']),
    ).to.include('at most 1');
  });

  it('reports every bad users flag at once', function () {
    const msg = usageError([
      '--users',
      'many',
      '--accept',
      '1.2',
      '--decline=-0.1',
      '--accept-delay',
      '2000-200',
      '--devices-per-user',
      'x',
      '--not-now',
      '2',
      '--self-service-interval',
      '5s',
      '--accept-via',
      'carrier-pigeon',
    ]);
    for (const flag of [
      '--users',
      '--accept',
      '--decline',
      '--accept-delay',
      '--devices-per-user',
      '--not-now',
      '--self-service-interval',
      '--accept-via',
    ]) {
      expect(msg).to.include(flag);
    }
    expect(usageError(['--not-now-times', '0'])).to.include('--not-now-times');
    expect(usageError(['--devices-per-user', '0'])).to.include('--devices-per-user');
    expect(usageError(['--accept-via', 'in-process', '--apple-vpp', 'off'])).to.include('--apple-vpp start');
  });

  it('documents the users flags in --help', async function () {
    const out = new Buffered();
    expect(
      (await runSimulator(['--help'], { stdout: out, stderr: new Buffered(), cwd: '/' })).exitCode,
    ).to.equal(0);
    for (const flag of [
      '--users',
      '--devices-per-user',
      '--accept ',
      '--ignore',
      '--decline',
      '--wrong-apple-id',
      '--accept-delay',
      '--not-now ',
      '--not-now-times',
      '--self-service-interval',
      '--accept-via',
    ]) {
      expect(out.text).to.include(flag);
    }
    expect(USAGE).to.include('users.map.json');
    const err = new Buffered();
    const r = await runSimulator(['--accept', '0.99'], { stdout: new Buffered(), stderr: err, cwd: '/' });
    expect(r).to.deep.equal({ exitCode: 2, summary: null, users: null });
    expect(err.text).to.include('at most 1');
  });
});
