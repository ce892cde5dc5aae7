/**
 * Every multi-step command is all or nothing across SIGKILL. Each command is killed at each of
 * its named steps (XVD_TEST_KILL_AT, src/cli/kill-point.ts) and after seeded random delays; then
 * `xvd check` passes (after each named point), one command (`xvd list`, which frees an abandoned
 * import) runs, and the catalog must check clean and be exactly the state before the command or
 * the state after it (VDs with their extents, free space, VBDs, members; a VD still zeroing
 * counts as live, the next create or import zeroes it). Import's live VD must hold the source's
 * bytes; export's file is absent or whole; format's image is absent or whole and formats when
 * the command runs again; quickstart leaves a prefix of its steps and its next run completes
 * them, zeroing included.
 */
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import t, { type Test } from 'tap';
import {
  identityOfFile, openCatalog, zeroPending, type Catalog, type VdDetail,
} from '../../src/catalog';
import { LIMITS } from '../../src/limits';
import { makeImage, runXvd, spawnXvd } from '../helpers/cli';

const MIB = 1024 * 1024;
const SEED = 20261207;
/** Random kills land this long after the spawn: node's start-up, then the command's work. */
const DELAY_MIN_MS = 150;
const DELAY_SPAN_MS = 1000;

let seed = SEED;
function random(): number {
  seed = (seed * 1103515245 + 12345) % 2 ** 31;
  return seed / 2 ** 31;
}

type Outcome = 'killed' | 'completed';
/** What each trial left, for the summary line of each command. */
type Left = 'before' | 'after';

interface Snapshot {
  vds: string[];
  freeBytes: number;
  vbds: string[];
  members: string[];
  faults: string[];
}

function withCatalog<T>(file: string, use: (catalog: Catalog) => T): T {
  const catalog = openCatalog(file, { create: false });
  try {
    return use(catalog);
  } finally {
    catalog.close();
  }
}

function vdText(vd: VdDetail): string {
  const state = vd.state === 'zeroing' ? 'live' : vd.state;
  const extents = vd.extents.map((e) => `${path.basename(e.path)}@${e.offset}+${e.length}`);
  return `${vd.id} ${vd.name ?? '-'} ${vd.size} ${state} ${extents.join(',')}`;
}

function snapshot(file: string): Snapshot {
  return withCatalog(file, (catalog) => ({
    vds: catalog.listVds({ all: true }).map((vd) => vdText(catalog.getVd(vd.id))),
    freeBytes: catalog.freeSpace().totalBytes,
    vbds: catalog.listVbds().map((v) => `${v.domain}/${v.device} ${v.mode} ${v.sourceText}`),
    members: catalog.listMembers().map((m) => path.basename(m.path)),
    faults: catalog.checkReport().faults,
  }));
}

function isSame(before: Snapshot, after: Snapshot): boolean {
  return JSON.stringify(before) === JSON.stringify(after);
}

/** The new VD lines of `after`, and whether every VD of `before` is unchanged. */
function addedVds(before: Snapshot, after: Snapshot): { added: string[]; isKept: boolean } {
  const added = after.vds.filter((line) => !before.vds.includes(line));
  const isKept = before.vds.every((line) => after.vds.includes(line));
  return { added, isKept };
}

interface Trial {
  args: string[];
  killAt: string | null;
}

/** Runs one trial: the command killed at its point or after a seeded delay. */
async function runKilled(catalog: string, trial: Trial): Promise<Outcome> {
  const env = trial.killAt === null ? {} : { XVD_TEST_KILL_AT: trial.killAt };
  const child = spawnXvd(trial.args, { catalog, env });
  let stderr = '';
  child.stderr?.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
  child.stdout?.resume();
  const closed = new Promise<{ code: number | null; signal: string | null }>((resolve) =>
    child.on('close', (code, signal) => resolve({ code, signal })));
  let timer: NodeJS.Timeout | null = null;
  if (trial.killAt === null) {
    timer = setTimeout(() => child.kill('SIGKILL'), DELAY_MIN_MS + random() * DELAY_SPAN_MS);
  }
  const { code, signal } = await closed;
  if (timer !== null) clearTimeout(timer);
  if (signal === 'SIGKILL') return 'killed';
  if (code !== 0) throw new Error(`xvd ${trial.args.join(' ')}: exit ${code}: ${stderr}`);
  return 'completed';
}

interface CommandPlan {
  name: string;
  /** Named points, each tried once, then `randomCount` seeded random kills. */
  points: string[];
  randomCount: number;
  args(index: number): string[];
  /** Whether `after` is exactly the state the command leaves when it completes. */
  isAfter(before: Snapshot, after: Snapshot, index: number): boolean;
  /** False for a command that changes no catalog row (export). */
  isChanging?: boolean;
  /** Extra assertions on the files a trial made. */
  inspect?(t: Test, index: number, left: Left): Promise<void>;
}

/** Runs every trial of a plan on `catalog` and reports what each kill left. */
async function runPlan(t: Test, catalog: string, plan: CommandPlan): Promise<void> {
  const trials: Trial[] = [
    ...plan.points.map((killAt) => ({ killAt })),
    ...Array.from({ length: plan.randomCount }, () => ({ killAt: null })),
  ].map((trial, index) => ({ ...trial, args: plan.args(index) }));
  const tally: string[] = [];
  for (const [index, trial] of trials.entries()) {
    const before = snapshot(catalog);
    const outcome = await runKilled(catalog, trial);
    if (trial.killAt !== null) {
      t.equal(outcome, 'killed', `${trial.killAt} was reached`);
      const check = await runXvd(['check'], { catalog }); // before any cleanup
      t.equal(check.code, 0, `xvd check after ${trial.killAt}: ${check.stdout}`);
    }
    const next = await runXvd(['list', '--all', '--json'], { catalog });
    t.equal(next.code, 0, next.stderr);
    const after = snapshot(catalog);
    t.same(after.faults, [], `${plan.name} #${index}: check is clean`);
    const isBefore = isSame(before, after);
    const left: Left = isBefore ? 'before' : 'after';
    t.ok(isBefore || plan.isAfter(before, after, index),
      `${plan.name} #${index} (${trial.killAt ?? 'random'}, ${outcome}): before or after state`
      + (isBefore ? '' : `\n${JSON.stringify(before)}\n${JSON.stringify(after)}`));
    if (outcome === 'completed' && plan.isChanging !== false) {
      t.equal(left, 'after', 'a completed command changed the state');
    }
    await plan.inspect?.(t, index, left);
    tally.push(`${trial.killAt ?? 'random'}:${outcome === 'killed' ? left : 'completed'}`);
  }
  t.comment(`${plan.name}: ${trials.length} trials: ${tally.join(' ')}`);
}

/** A catalog with one 64 MiB pool of 1 MiB extents, made in process. */
function pool(dir: string, sizeBytes = 64 * MIB): string {
  const catalog = path.join(dir, 'c.sqlite');
  const image = makeImage(path.join(dir, 'pool.img'), sizeBytes);
  const st = fs.statSync(image);
  const opened = openCatalog(catalog);
  opened.formatMember({ path: fs.realpathSync(image), kind: 'file', sizeBytes,
    extentSize: MIB, identity: identityOfFile(st.dev, st.ino) });
  opened.close();
  return catalog;
}

async function createIn(catalog: string, sizes: number[]): Promise<number[]> {
  const opened = openCatalog(catalog);
  try {
    const ids = sizes.map((size) => opened.createVd({ size }).id);
    await zeroPending(opened);
    return ids;
  } finally {
    opened.close();
  }
}

function isSameVbdsAndMembers(before: Snapshot, after: Snapshot): boolean {
  const outside = (s: Snapshot) => JSON.stringify([s.vbds, s.members]);
  return outside(before) === outside(after);
}

/** Exactly one new VD line, matching `pattern`, and `usedBytes` less free space. */
function oneNewVd(before: Snapshot, after: Snapshot, pattern: RegExp, usedBytes: number): boolean {
  const { added, isKept } = addedVds(before, after);
  return isKept && added.length === 1 && pattern.test(added[0]!)
    && after.vds.length === before.vds.length + 1
    && after.freeBytes === before.freeBytes - usedBytes
    && isSameVbdsAndMembers(before, after);
}

/** Only VD `id`'s line changed, to one matching `pattern`; free space by `freeDeltaBytes`. */
function oneChangedVd(before: Snapshot, after: Snapshot, id: number, pattern: RegExp,
  freeDeltaBytes: number): boolean {
  const others = (s: Snapshot) => s.vds.filter((line) => !line.startsWith(`${id} `));
  const line = after.vds.find((l) => l.startsWith(`${id} `));
  return line !== undefined && pattern.test(line)
    && JSON.stringify(others(before)) === JSON.stringify(others(after))
    && after.freeBytes === before.freeBytes + freeDeltaBytes
    && isSameVbdsAndMembers(before, after);
}

t.test('create', async (t) => {
  const catalog = pool(t.testdir());
  await runPlan(t, catalog, {
    name: 'create', points: ['create:allocated', 'create:zeroed'], randomCount: 2,
    args: (i) => ['create', '3M', '--name', `c${i}`],
    isAfter: (before, after, i) =>
      oneNewVd(before, after, new RegExp(`^\\d+ c${i} ${3 * MIB} live `), 3 * MIB),
  });
  const last = await runXvd(['create', '1M'], { catalog });
  t.equal(last.code, 0);
  t.same(withCatalog(catalog, (c) => c.pendingZeroing()), [], 'the next create zeroes the rest');
});

t.test('enlarge', async (t) => {
  const catalog = pool(t.testdir());
  const [id] = await createIn(catalog, [2 * MIB]);
  await runPlan(t, catalog, {
    name: 'enlarge', points: ['enlarge:allocated'], randomCount: 2,
    args: () => ['enlarge', String(id), '+1M'],
    isAfter: (before, after) => {
      const size = Number(before.vds[0]!.split(' ')[2]);
      const extents = before.vds[0]!.split(' ')[4]!;
      const pattern = new RegExp(`^${id} - ${size + MIB} live ${extents.replace(/\+/g, '\\+')}`);
      return oneChangedVd(before, after, id!, pattern, -MIB);
    },
  });
});

t.test('delete and undelete', async (t) => {
  const catalog = pool(t.testdir());
  const ids = await createIn(catalog, [MIB, MIB, MIB, MIB]);
  await runPlan(t, catalog, {
    name: 'delete', points: [], randomCount: 2,
    args: (i) => ['delete', String(ids[i])],
    isAfter: (before, after, i) =>
      oneChangedVd(before, after, ids[i]!, new RegExp(`^${ids[i]} - ${MIB} deleted `), MIB),
  });
  const deleted = withCatalog(catalog, (c) =>
    c.listVds({ all: true }).filter((vd) => vd.state === 'deleted').map((vd) => vd.id));
  await runPlan(t, catalog, {
    name: 'undelete', points: [], randomCount: Math.min(1, deleted.length),
    args: (i) => ['undelete', String(deleted[i])],
    isAfter: (before, after, i) =>
      oneChangedVd(before, after, deleted[i]!, new RegExp(`^${deleted[i]} - ${MIB} live `),
        -MIB),
  });
});

t.test('clone', async (t) => {
  const catalog = pool(t.testdir());
  const [id] = await createIn(catalog, [3 * MIB]);
  const extents = snapshot(catalog).vds[0]!.split(' ')[4]!.replace(/\+/g, '\\+');
  await runPlan(t, catalog, {
    name: 'clone', points: ['clone:cloned'], randomCount: 4,
    args: (i) => ['clone', String(id), '--name', `k${i}`],
    isAfter: (before, after, i) =>
      oneNewVd(before, after, new RegExp(`^\\d+ k${i} ${3 * MIB} live ${extents}$`), 0),
  });
  // a running server leases the origin and never switches: the kills land while clone waits
  const server = openCatalog(catalog);
  t.teardown(() => server.close());
  server.acquireLease(server.registerServer(), id!);
  await runPlan(t, catalog, {
    name: 'clone (waiting for the switch)', points: [], randomCount: 3,
    args: (i) => ['clone', String(id), '--name', `w${i}`],
    isAfter: (before, after, i) =>
      oneNewVd(before, after, new RegExp(`^\\d+ w${i} ${3 * MIB} live ${extents}$`), 0),
  });
});

t.test('vbd add and remove', async (t) => {
  const catalog = pool(t.testdir());
  const [id] = await createIn(catalog, [MIB]);
  const sameVds = (before: Snapshot, after: Snapshot) =>
    JSON.stringify([before.vds, before.freeBytes, before.members])
      === JSON.stringify([after.vds, after.freeBytes, after.members]);
  await runPlan(t, catalog, {
    name: 'vbd add', points: [], randomCount: 2,
    args: (i) => ['vbd', 'add', `vd:${id}`, `xvd${i}`, '--domain', '1', '--mode', 'r'],
    isAfter: (before, after, i) => sameVds(before, after)
      && JSON.stringify(after.vbds) === JSON.stringify([...before.vbds, `1/xvd${i} r vd:${id}`]),
  });
  withCatalog(catalog, (c) => c.addVbd({ domain: 1, device: 'xvdz', mode: 'r',
    source: { kind: 'vd', vdId: id! } })); // one to remove even if every add was killed early
  const present = withCatalog(catalog, (c) => c.listVbds().map((v) => v.device));
  await runPlan(t, catalog, {
    name: 'vbd remove', points: [], randomCount: Math.min(2, present.length),
    args: (i) => ['vbd', 'remove', present[i]!, '--domain', '1'],
    isAfter: (before, after, i) => sameVds(before, after) && JSON.stringify(after.vbds)
      === JSON.stringify(before.vbds.filter((line) => !line.startsWith(`1/${present[i]} `))),
  });
});

/** A source whose every MiB holds seeded data, so the copy has work in each chunk. */
function denseFile(file: string, sizeBytes: number): string {
  const chunk = Buffer.alloc(MIB);
  crypto.createHash('sha512').update(String(SEED)).digest().copy(chunk);
  const fd = fs.openSync(file, 'w');
  for (let at = 0; at < sizeBytes; at += MIB) {
    chunk.writeUInt32BE(at / MIB, 64);
    fs.writeSync(fd, chunk, 0, Math.min(MIB, sizeBytes - at), at);
  }
  fs.closeSync(fd);
  return file;
}

function sha256(buffer: Buffer): string {
  return crypto.createHash('sha256').update(buffer).digest('hex');
}

/** The bytes of a VD read straight from its pool pieces. */
function vdBytes(catalog: string, id: number): Buffer {
  const vd = withCatalog(catalog, (c) => c.getVd(id));
  const out = Buffer.alloc(vd.size);
  let at = 0;
  for (const e of vd.extents) {
    const fd = fs.openSync(e.path, 'r');
    at += fs.readSync(fd, out, at, Math.min(e.length, vd.size - at), e.offset);
    fs.closeSync(fd);
  }
  return out;
}

t.test('import', async (t) => {
  const dir = t.testdir();
  const catalog = pool(dir);
  const sizeBytes = 8 * MIB + 4096;
  const source = denseFile(path.join(dir, 'src.raw'), sizeBytes);
  const digest = sha256(fs.readFileSync(source));
  const usedBytes = Math.ceil(sizeBytes / MIB) * MIB;
  await runPlan(t, catalog, {
    name: 'import',
    points: ['import:allocated', 'import:zeroed', 'import:chunk@2', 'import:chunk@6',
      'import:synced', 'import:completed'],
    randomCount: 2,
    args: (i) => ['import', source, '--name', `i${i}`],
    isAfter: (before, after, i) =>
      oneNewVd(before, after, new RegExp(`^\\d+ i${i} ${sizeBytes} live `), usedBytes),
    inspect: async (t, i, left) => {
      if (left === 'before') return;
      const id = withCatalog(catalog, (c) => c.listVds().find((vd) => vd.name === `i${i}`)!.id);
      t.equal(sha256(vdBytes(catalog, id)), digest, `live import i${i} holds the source`);
      withCatalog(catalog, (c) => c.deleteVd(id)); // room for the next trials
    },
  });
});

t.test('export', async (t) => {
  const dir = t.testdir();
  const catalog = pool(dir);
  const [id] = await createIn(catalog, [12 * MIB]);
  const data = crypto.randomBytes(12 * MIB);
  const fd = fs.openSync(path.join(dir, 'pool.img'), 'r+');
  const extents = withCatalog(catalog, (c) => c.getVd(id!).extents);
  let at = 0;
  for (const e of extents) at += fs.writeSync(fd, data, at, e.length, e.offset);
  fs.closeSync(fd);
  const digest = sha256(data);
  const target = (i: number) => path.join(dir, `out${i}.raw`);
  await runPlan(t, catalog, {
    name: 'export', points: ['export:chunk@2', 'export:synced'], randomCount: 1,
    args: (i) => ['export', String(id), target(i)],
    isChanging: false,
    isAfter: () => false,
    inspect: async (t, i) => {
      if (fs.existsSync(target(i))) {
        t.equal(sha256(fs.readFileSync(target(i))), digest, `out${i}.raw is whole`);
        return;
      }
      const again = await runXvd(['export', String(id), target(i)], { catalog });
      t.equal(again.code, 0, again.stderr);
      t.equal(sha256(fs.readFileSync(target(i))), digest, `out${i}.raw, exported again`);
      t.same(fs.readdirSync(dir).filter((name) => name.startsWith(`.out${i}.raw.`)), [],
        'no staging file is left');
    },
  });
});

t.test('format --size', async (t) => {
  const dir = t.testdir();
  const catalog = pool(dir);
  const image = (i: number) => path.join(dir, `m${i}.img`);
  await runPlan(t, catalog, {
    name: 'format', points: ['format:staged', 'format:created'], randomCount: 1,
    args: (i) => ['format', image(i), '--size', '8M', '--extent-size', '1M'],
    isAfter: (before, after, i) => JSON.stringify([after.vds, after.vbds])
      === JSON.stringify([before.vds, before.vbds])
      && JSON.stringify(after.members) === JSON.stringify([...before.members, `m${i}.img`])
      && after.freeBytes === before.freeBytes + 8 * MIB,
    inspect: async (t, i, left) => {
      if (left === 'after') return;
      if (fs.existsSync(image(i))) t.equal(fs.statSync(image(i)).size, 8 * MIB, 'whole');
      const again = await runXvd(['format', image(i), '--size', '8M', '--extent-size', '1M'],
        { catalog });
      t.equal(again.code, 0, `format m${i}.img again: ${again.stderr}`);
      t.same(fs.readdirSync(dir).filter((name) => name.startsWith(`.m${i}.img.`)), [],
        'no staging file is left');
    },
  });
});

t.test('quickstart --no-serve', async (t) => {
  const points = ['format:staged', 'format:created', 'quickstart:pool',
    'quickstart:allocated', 'quickstart:disk'];
  const tally: string[] = [];
  const dir = t.testdir();
  for (const [index, killAt] of [...points, null].entries()) {
    const catalog = path.join(dir, `q${index}`, 'c.sqlite');
    const outcome = await runKilled(catalog, { args: ['quickstart', '--no-serve'], killAt });
    if (killAt !== null) t.equal(outcome, 'killed', `${killAt} was reached`);
    const next = await runXvd(['list', '--json'], { catalog });
    t.equal(next.code, 0, next.stderr);
    const left = snapshot(catalog);
    t.same(left.faults, []);
    const steps = [left.members.length === 1, left.vds.length === 1, left.vbds.length === 1];
    t.ok(steps.every((done, i) => done || !steps.slice(i + 1).some(Boolean)),
      `#${index} (${killAt ?? 'random'}) left a prefix of the steps: ${JSON.stringify(left)}`);
    tally.push(`${killAt ?? 'random'}:${steps.filter(Boolean).length}`);
    const again = await runXvd(['quickstart', '--no-serve'], { catalog });
    t.equal(again.code, 0, again.stderr);
    const resolved = withCatalog(catalog, (c) => c.resolveVbd(0, 'xvda'));
    t.equal(resolved.size, LIMITS.quickstartDiskBytes, 'the next run makes it servable');
    t.notOk(resolved.isDangling);
  }
  t.comment(`quickstart: steps done when killed (of 3): ${tally.join(' ')}`);
});
