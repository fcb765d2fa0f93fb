import { expect } from 'chai';
import { seededRng } from '../../../simulator/device/device-spec.ts';
import {
  BEHAVIOURS,
  DEFAULT_PROBABILITIES,
  drawBehaviour,
  drawInRange,
  drawUserBehaviour,
  formatRange,
  parseRange,
  probabilityProblems,
} from '../../../simulator/users/behaviour.ts';
import type { BehaviourKind } from '../../../simulator/users/behaviour.ts';

describe('simulator/users: behaviour sampling', function () {
  it('draws behaviours with the given probabilities (seeded, 20 000 draws), the remainder ignoring', function () {
    const rng = seededRng(42);
    const p = { accept: 0.6, ignore: 0.1, decline: 0.1, wrongAppleId: 0.05 };
    const n = 20_000;
    const counts: Record<BehaviourKind, number> = { accept: 0, ignore: 0, decline: 0, wrong_apple_id: 0 };
    for (let i = 0; i < n; i++) counts[drawBehaviour(p, rng)]++;
    const share = (k: BehaviourKind) => counts[k] / n;
    expect(share('accept')).to.be.closeTo(0.6, 0.015);
    expect(share('decline')).to.be.closeTo(0.1, 0.01);
    expect(share('wrong_apple_id')).to.be.closeTo(0.05, 0.01);
    // ignore: its own 0.1 plus the 0.15 left over
    expect(share('ignore')).to.be.closeTo(0.25, 0.015);
  });

  it('is reproducible from a seed and honours the extremes', function () {
    const a = seededRng(7);
    const b = seededRng(7);
    const draws = (rng: () => number) =>
      Array.from({ length: 50 }, () => drawBehaviour(DEFAULT_PROBABILITIES, rng));
    expect(draws(a)).to.deep.equal(draws(b));
    const rng = seededRng(1);
    for (let i = 0; i < 1000; i++) {
      expect(drawBehaviour({ accept: 1, ignore: 0, decline: 0, wrongAppleId: 0 }, rng)).to.equal('accept');
      expect(drawBehaviour({ accept: 0, ignore: 0, decline: 0, wrongAppleId: 0 }, rng)).to.equal('ignore');
      expect(drawBehaviour({ accept: 0, ignore: 0, decline: 0, wrongAppleId: 1 }, rng)).to.equal(
        'wrong_apple_id',
      );
    }
    expect(BEHAVIOURS).to.deep.equal(['accept', 'ignore', 'decline', 'wrong_apple_id']);
  });

  it('draws delays uniformly within the inclusive range', function () {
    const rng = seededRng(3);
    const seen = new Set<number>();
    let sum = 0;
    for (let i = 0; i < 10_000; i++) {
      const v = drawInRange({ min: 10, max: 20 }, rng);
      expect(v).to.be.within(10, 20);
      expect(Number.isInteger(v)).to.equal(true);
      seen.add(v);
      sum += v;
    }
    expect(seen.size).to.equal(11);
    expect(sum / 10_000).to.be.closeTo(15, 0.2);
    expect(drawInRange({ min: 5, max: 5 }, rng)).to.equal(5);
    expect(drawInRange({ min: 0, max: 3 }, () => 0.9999999)).to.equal(3);
    const b = drawUserBehaviour(DEFAULT_PROBABILITIES, { min: 200, max: 2000 }, seededRng(9));
    expect(BEHAVIOURS).to.include(b.kind);
    expect(b.delayMs).to.be.within(200, 2000);
  });

  it('parses ranges and checks probabilities', function () {
    expect(parseRange('200-2000')).to.deep.equal({ min: 200, max: 2000 });
    expect(parseRange(' 3 ')).to.deep.equal({ min: 3, max: 3 });
    expect(parseRange('1 - 3')).to.deep.equal({ min: 1, max: 3 });
    for (const bad of ['', '3-1', '-1', '1-', 'a-b', '1.5-2', '1-2-3'])
      expect(parseRange(bad), bad).to.equal(null);
    expect(formatRange({ min: 1, max: 3 })).to.equal('1-3');
    expect(formatRange({ min: 4, max: 4 })).to.equal('4');

    expect(probabilityProblems(DEFAULT_PROBABILITIES)).to.deep.equal([]);
    expect(probabilityProblems({ accept: 0.7, ignore: 0.1, decline: 0.1, wrongAppleId: 0.1 })).to.deep.equal(
      [],
    );
    const over = probabilityProblems({ accept: 0.9, ignore: 0.1, decline: 0.05, wrongAppleId: 0 });
    expect(over).to.have.length(1);
    expect(over[0]).to.match(/add up to 1\.05: at most 1/);
    expect(
      probabilityProblems({ accept: 1.5, ignore: -1, decline: 0, wrongAppleId: Number.NaN }),
    ).to.deep.equal([
      '--accept: must be between 0 and 1',
      '--ignore: must be between 0 and 1',
      '--wrong-apple-id: must be between 0 and 1',
    ]);
  });
});
