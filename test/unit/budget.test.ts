import t from 'tap';
import { MemoryBudget } from '../../src/nbd/budget';

const KiB = 1024;

t.test('within the floor a connection always goes on; beyond it only within the max', (t) => {
  const budget = new MemoryBudget(100 * KiB, 10 * KiB);
  budget.adjust(100 * KiB);
  t.equal(budget.canTake(0, 10 * KiB), true, 'a connection holding nothing: its floor');
  t.equal(budget.canTake(1 * KiB, 10 * KiB), false, 'past its floor, and the budget is full');
  budget.adjust(-20 * KiB);
  t.equal(budget.canTake(50 * KiB, 20 * KiB), true, 'room again');
  t.equal(budget.canTake(50 * KiB, 21 * KiB), false, 'but not past the max');
  t.end();
});

t.test('parked requests resume oldest first, and nobody jumps the queue', (t) => {
  const budget = new MemoryBudget(100 * KiB, 0);
  budget.adjust(100 * KiB);
  const resumed: string[] = [];
  const waiter = (name: string, cost: number) => (): boolean => {
    if (!budget.canResume(50 * KiB, cost)) return false;
    budget.adjust(cost);
    resumed.push(name);
    return true;
  };
  budget.park(waiter('big', 60 * KiB));
  budget.park(waiter('small', 1 * KiB));
  t.equal(budget.canTake(50 * KiB, 1 * KiB), false, 'a newcomer waits behind them');
  budget.adjust(-30 * KiB);
  t.same(resumed, [], 'the big one cannot go yet, so the small one behind it waits too');
  budget.adjust(-40 * KiB);
  t.same(resumed, ['big', 'small'], 'then both, in order');
  t.equal(budget.waiting, 0);
  t.equal(budget.heldBytes, 91 * KiB);
  t.equal(budget.peakBytes, 100 * KiB);
  t.end();
});

t.test('a parked connection that closes leaves the queue, and the next one goes', (t) => {
  const budget = new MemoryBudget(10 * KiB, 0);
  budget.adjust(10 * KiB);
  const gone = (): boolean => false;
  let isResumed = false;
  budget.park(gone);
  budget.park(() => {
    isResumed = budget.canResume(0, 1 * KiB);
    return isResumed;
  });
  budget.adjust(-5 * KiB);
  t.equal(isResumed, false, 'blocked behind the first');
  budget.unpark(gone);
  t.equal(isResumed, true, 'resumed once the first left');
  t.equal(budget.waiting, 0);
  t.end();
});

t.test('the data-path threads count in the same total', (t) => {
  const MiB = 1024 * KiB;
  let threads = 0;
  let reported = -1;
  const budget = new MemoryBudget(100 * MiB, 0, (js) => {
    reported = js;
    return threads;
  });
  threads = 90 * MiB;
  budget.adjust(5 * MiB);
  t.equal(reported, 5 * MiB, 'JS tells the threads what it holds');
  t.equal(budget.heldBytes, 95 * MiB, 'and counts what they hold');
  t.equal(budget.canTake(5 * MiB, 10 * MiB), false, 'so the total stays within the max');
  budget.adjust(1 * KiB);
  t.equal(reported, 5 * MiB, 'a small change is not worth an addon call');
  budget.adjust(-1 * KiB);
  threads = 0;
  budget.refresh();
  t.equal(budget.canTake(5 * MiB, 10 * MiB), true);
  budget.adjust(-5 * MiB);
  t.equal(reported, 0, 'holding nothing is always told');
  t.throws(() => budget.adjust(-10 * KiB), /more bytes given back than taken/);
  t.end();
});
