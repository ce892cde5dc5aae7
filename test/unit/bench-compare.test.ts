/**
 * The benchmark command's own logic (scripts/bench): the ratios and n/a handling of the table,
 * and the process plumbing it relies on to charge CPU to a server tree and to stop a server
 * with all its children.
 */
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import t from 'tap';

interface Cell {
  value?: number;
  unit?: string;
  cpuSecondsPerGiB?: number | null;
  error?: string;
  round?: number;
  rounds?: Cell[];
}
interface Paired {
  median: number;
  low: number;
  high: number;
  count: number;
}
interface Row {
  key: string;
  label: string;
  transport: string;
  unit: string;
  cells: Record<string, Cell>;
  bestPeer?: string | null;
  xvdOverBest?: number | null;
  fragOverSingle?: number | null;
  xvdOverBasePaired?: Paired | null;
  fragOverBasePaired?: Paired | null;
}
interface ReportModule {
  buildRows(run: { rows: Row[] }, peers: string[]): Row[];
  renderTable(rows: Row[], columns: string[]): string;
  fallenRows(rows: Row[], field: 'xvdOverBasePaired' | 'fragOverBasePaired', floor: number): Row[];
}
interface ProcModule {
  cpuSecondsTree(pid: number): number | null;
  descendants(pid: number): number[];
  isAlive(pid: number): boolean;
  registerGroup(pgid: number, label: string): void;
  stopGroup(pgid: number): Promise<void>;
  sleep(ms: number): Promise<void>;
}

// eslint-disable-next-line @typescript-eslint/no-require-imports
const report = require('../../scripts/bench/lib/report.js') as ReportModule;
// eslint-disable-next-line @typescript-eslint/no-require-imports
const proc = require('../../scripts/bench/lib/proc.js') as ProcModule;
interface RoundsModule {
  rotate(names: string[], offset: number): string[];
  median(values: number[]): number;
  summarizeRounds(cells: Cell[]): Cell & { spread?: number | null; failedRounds: number };
  pairedRatio(a: Cell | undefined, b: Cell | undefined): Paired | null;
}
// eslint-disable-next-line @typescript-eslint/no-require-imports
const rounds = require('../../scripts/bench/lib/rounds.js') as RoundsModule;

const PEERS = ['nbdkit', 'qemu-nbd', 'nbd-server'];

function row(cells: Record<string, Cell>): Row {
  return {
    key: 'randread-4k/tcp', label: 'randread 4k qd32', transport: 'tcp', unit: 'IOPS', cells,
  };
}

t.test('xvd is divided by the best peer and the fragmented VD by the single one', async (t) => {
  const [built] = report.buildRows({
    rows: [row({
      nbdkit: { value: 80000, unit: 'IOPS' },
      'qemu-nbd': { value: 40000, unit: 'IOPS' },
      'nbd-server': { value: 100000, unit: 'IOPS' },
      xvd: { value: 120000, unit: 'IOPS' },
      'xvd-frag': { value: 60000, unit: 'IOPS' },
    })],
  }, PEERS);
  t.equal(built?.bestPeer, 'nbd-server');
  t.equal(built?.xvdOverBest, 1.2);
  t.equal(built?.fragOverSingle, 0.5);
});

t.test('a failed peer is left out of the best, and a failed xvd gives n/a ratios', async (t) => {
  const [built] = report.buildRows({
    rows: [row({
      nbdkit: { error: 'not listening after 20000 ms' },
      'qemu-nbd': { value: 40000, unit: 'IOPS' },
      xvd: { error: '`xvd serve` not available yet' },
    })],
  }, PEERS);
  t.equal(built?.bestPeer, 'qemu-nbd');
  t.equal(built?.xvdOverBest, null);
  t.equal(built?.fragOverSingle, null);
  const table = report.renderTable(built ? [built] : [], ['nbdkit', 'qemu-nbd', 'xvd']);
  t.match(table, /\| n\/a +\| 40\.0k +\| n\/a +\| qemu-nbd/);
});

t.test('a table cell shows the value and the server CPU seconds per GiB', async (t) => {
  const [built] = report.buildRows({
    rows: [{ ...row({ nbdkit: { value: 2048.4, unit: 'MiB/s', cpuSecondsPerGiB: 0.314 } }),
      unit: 'MiB/s' }],
  }, PEERS);
  t.match(report.renderTable(built ? [built] : [], ['nbdkit']), /\| 2048 \[0\.31\] /);
});

t.test('stopping a server group also ends the children it forked', async (t) => {
  const child = spawn('sh', ['-c', 'sleep 60 & sleep 60 & wait'], {
    detached: true, stdio: 'ignore',
  });
  const pid = child.pid;
  if (pid === undefined) throw new Error('spawn failed');
  proc.registerGroup(pid, 'sh');
  let children: number[] = [];
  for (let attempt = 0; attempt < 100 && children.length < 2; attempt += 1) {
    await proc.sleep(20);
    children = proc.descendants(pid);
  }
  t.equal(children.length, 2, 'both sleeps are counted as the tree of the server');
  await proc.stopGroup(pid);
  t.notOk(proc.isAlive(pid), 'the parent is gone');
  t.same(children.filter((one) => proc.isAlive(one)), [], 'no child survives');
});

t.test('CPU spent by a reaped child process is charged to its parent tree', async (t) => {
  // the subshell burns CPU and is reaped (cutime), then the parent becomes `sleep`
  const script = '( i=0; while [ $i -lt 200000 ]; do i=$((i+1)); done ); exec sleep 60';
  const child = spawn('sh', ['-c', script], { detached: true, stdio: 'ignore' });
  const pid = child.pid;
  if (pid === undefined) throw new Error('spawn failed');
  proc.registerGroup(pid, 'sh');
  const comm = (): string => {
    try {
      return fs.readFileSync(`/proc/${pid}/comm`, 'utf8').trim();
    } catch {
      return '';
    }
  };
  for (let attempt = 0; attempt < 1500 && comm() !== 'sleep'; attempt += 1) await proc.sleep(20);
  t.equal(comm(), 'sleep', 'the busy subshell finished');
  const spent = proc.cpuSecondsTree(pid) ?? 0;
  t.ok(spent > 0.05, `the subshell's CPU (${spent} s) is counted`);
  await proc.stopGroup(pid);
});

t.test('rounds: every server goes first once per cycle, and cells are medians', async (t) => {
  const names = ['nbdkit', 'qemu-nbd', 'xvd'];
  const firsts = [0, 1, 2, 3].map((offset) => rounds.rotate(names, offset)[0]);
  t.same(firsts, ['nbdkit', 'qemu-nbd', 'xvd', 'nbdkit']);
  t.same(rounds.rotate(names, 1), ['qemu-nbd', 'xvd', 'nbdkit']);
  t.equal(rounds.median([5, 1, 3]), 3);
  t.equal(rounds.median([4, 1, 3, 2]), 2.5);
  const cell = rounds.summarizeRounds([
    { value: 100, unit: 'IOPS', cpuSecondsPerGiB: 2 },
    { error: 'server died' },
    { value: 300, unit: 'IOPS', cpuSecondsPerGiB: 4 },
    { value: 200, unit: 'IOPS', cpuSecondsPerGiB: 9 },
  ]);
  t.equal(cell.value, 200, 'median of the measured rounds');
  t.equal(cell.cpuSecondsPerGiB, 4);
  t.equal(cell.spread, 1, '(max - min) / median');
  t.equal(cell.failedRounds, 1);
  const failed = rounds.summarizeRounds([{ error: 'a' }, { error: 'b' }]);
  t.equal(failed.error, 'b');
  t.notOk(failed.value);
});

t.test('paired ratios: rounds matched by number, failed rounds left out, quartiles', async (t) => {
  const cell = (values: (number | null)[], order: number[]): Cell => ({
    value: 1, unit: 'IOPS',
    // stored out of round order, as a cell's rounds may be: pairing is by `round`, not position
    rounds: order.map((round) => values[round] === null ? { error: 'died', round }
      : { value: values[round] as number, unit: 'IOPS', round }),
  });
  const a = cell([110, 90, 200, null, 120, 100, 80, 150], [0, 1, 2, 3, 4, 5, 6, 7]);
  const b = cell([100, 100, 100, 100, null, 100, 100, 100], [7, 6, 5, 4, 3, 2, 1, 0]);
  const paired = rounds.pairedRatio(a, b);
  // rounds 3 and 4 failed on one side: ratios 0.8 0.9 1.0 1.1 1.5 2.0
  t.equal(paired?.count, 6);
  t.equal(paired?.median, 1.05);
  t.equal(paired?.low, 0.9, 'lower quartile');
  t.equal(paired?.high, 1.5, 'upper quartile');
  t.equal(rounds.pairedRatio(cell([100], [0]), cell([50], [0])), null, 'one round: no pairs');
  t.equal(rounds.pairedRatio(a, { error: 'never started' }), null);
  const [built] = report.buildRows({
    rows: [row({ nbdkit: b, xvd: a, 'xvd-frag': b })],
  }, PEERS);
  const table = report.renderTable(built ? [built] : [], ['nbdkit', 'xvd', 'xvd-frag']);
  t.match(table, /\| 1\.05x \(0\.90-1\.50\) +\| 0\.95x \(0\.67-1\.11\) +\|$/m);
});

t.test('--base: xvd over xvd-base paired by round, shown only when the base ran', async (t) => {
  const cell = (values: (number | null)[]): Cell => ({
    value: 1, unit: 'IOPS',
    rounds: values.map((value, round) => value === null ? { error: 'died', round }
      : { value, unit: 'IOPS', round }),
  });
  const base = cell([100, 100, 100, 100, 100]);
  const fragBase = cell([50, 50, 50, null, 50]);
  const [built] = report.buildRows({
    rows: [row({
      nbdkit: base, xvd: cell([90, 95, 120, 100, 93]), 'xvd-base': base,
      'xvd-frag': cell([55, 50, 60, 40, 45]), 'xvd-frag-base': fragBase,
    })],
  }, PEERS);
  // ratios 0.90 0.93 0.95 1.00 1.20; frag (round 3 left out) 0.90 1.00 1.10 1.20
  t.same(built?.xvdOverBasePaired, { median: 0.95, low: 0.93, high: 1, count: 5 });
  t.equal(built?.fragOverBasePaired?.count, 4);
  t.equal(built?.fragOverBasePaired?.median, 1.05);
  const rows = built ? [built] : [];
  const table = report.renderTable(rows, ['nbdkit', 'xvd', 'xvd-frag', 'xvd-base',
    'xvd-frag-base']);
  t.match(table, /\| xvd\/base paired +\| frag\/base paired +\|$/m, 'both columns, last');
  t.match(table, /\| 0\.95x \(0\.93-1\.00\) +\| 1\.05x \(0\.90-1\.20\) +\|$/m);
  const withoutFragBase = report.renderTable(rows, ['nbdkit', 'xvd', 'xvd-base']);
  t.match(withoutFragBase, /\| xvd\/base paired +\|$/m, 'a base server not run: no column');
  t.notMatch(report.renderTable(rows, ['nbdkit', 'xvd']), /base paired/, 'no --base: no column');
  t.same(report.fallenRows(rows, 'xvdOverBasePaired', 0.96).map((one) => one.key),
    ['randread-4k/tcp'], '0.95x is a fall of more than 4%');
  t.same(report.fallenRows(rows, 'xvdOverBasePaired', 0.95), [], 'but not of more than 5%');
  const [single] = report.buildRows({ rows: [row({ nbdkit: base, xvd: base })] }, PEERS);
  t.equal(single?.xvdOverBasePaired, null, 'no base cell: null, so JSON says so');
  t.same(report.fallenRows(single ? [single] : [], 'xvdOverBasePaired', 2), []);
});
