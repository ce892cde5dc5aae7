// Sets up the pools that xvd serves in the benchmark, through the real `xvd` CLI
// (dist/cli/main.js, run with this Node):
//  - 'single': one 1 GiB+ image member (4 MiB extents), one 1 GiB VD in one extent run, in the
//    run's temp dir under the server's name.
//  - 'fragmented': two image members with 1 MiB extents, each filled completely with 1 MiB VDs
//    (`create 1M --on MEMBER`, so ids follow offsets), every other one deleted, then the 1 GiB
//    VD created into the holes, so it is >= 1024 extent runs alternating over both members;
//    checked with `xvd show ID --json`. Building it takes a few thousand creates: done in one
//    child process through the CLI's catalog port (lib/frag-fill.js), else by `xvd` commands
//    (minutes); the pool is cached under results/cache/ and reused while `xvd show` still
//    verifies it. Each server name has its own pool (the cache dir is named after the server), so
//    that `--base`'s xvd-frag-base, run from another checkout's CLI, never opens the catalog
//    xvd-frag serves.
// ctx.repo is the checkout whose dist/cli/main.js is run (servers.js passes another checkout's
// repo for the `--base` servers). Both VDs are exported as VBD `xvda` of domain 1 (export name
// "1/xvda").
'use strict';
const fs = require('node:fs');
const path = require('node:path');
const proc = require('./proc');

const EXPORT_NAME = '1/xvda';
const DOMAIN = '1';
const DEVICE = 'xvda';
const FRAGMENT_RUNS_MIN = 1024;
const FRAGMENT_MEMBER_BYTES = (1024 + 8) * 1024 * 1024;
const FRAGMENT_FILL_MAX = 4096;
const CLI_PARALLEL = 2;
const CLI_TIMEOUT_MS = 60000;

function cliPath(ctx) {
  return path.join(ctx.repo, 'dist', 'cli', 'main.js');
}

async function cli(ctx, catalog, args, timeoutMs = CLI_TIMEOUT_MS) {
  return proc.run(process.execPath, [cliPath(ctx), '--catalog', catalog, ...args], {
    timeoutMs,
    env: { ...process.env, XVD_CATALOG: catalog },
  });
}

async function cliOk(ctx, catalog, args) {
  const result = await cli(ctx, catalog, args);
  if (result.code !== 0) {
    throw new Error(`xvd ${args.join(' ')}: exit ${result.code}: ${proc.tail(result.stderr, 2)}`);
  }
  return result.stdout.trim();
}

function newestMtimeMs(dir, depthMax = 8) {
  let newest = 0;
  if (depthMax < 0 || !fs.existsSync(dir)) return newest;
  for (const entry of fs.readdirSync(dir, { withFileTypes: true })) {
    const full = path.join(dir, entry.name);
    if (entry.isDirectory()) newest = Math.max(newest, newestMtimeMs(full, depthMax - 1));
    else if (entry.name.endsWith('.ts')) newest = Math.max(newest, fs.statSync(full).mtimeMs);
  }
  return newest;
}

/** True when some src/ file is newer than dist/cli/main.js: the figures would be of old code. */
function isDistStale(ctx) {
  if (!fs.existsSync(cliPath(ctx))) return true;
  return newestMtimeMs(path.join(ctx.repo, 'src')) > fs.statSync(cliPath(ctx)).mtimeMs;
}

/** Returns the flag names `xvd serve` uses for TCP and unix listeners, or throws "n/a" reason. */
async function serveFlags(ctx) {
  if (!fs.existsSync(cliPath(ctx))) throw new Error('dist/cli/main.js missing (run npm run build)');
  const help = await proc.run(process.execPath, [cliPath(ctx), 'serve', '--help'], {
    timeoutMs: 15000,
  });
  const text = `${help.stdout}\n${help.stderr}`;
  if (help.code !== 0 || !/--listen\b/.test(text)) {
    throw new Error('`xvd serve` not available yet in this checkout');
  }
  const socket = ['--socket', '--unix', '--unix-socket'].find((flag) =>
    new RegExp(`${flag}\\b`).test(text));
  return { listen: '--listen', socket: socket || '--socket' };
}

async function showExtents(ctx, catalog, id) {
  const shown = JSON.parse(await cliOk(ctx, catalog, ['show', String(id), '--json']));
  if (!Array.isArray(shown.extents)) throw new Error('xvd show --json has no extents array');
  const members = new Set(shown.extents.map((extent) => extent.path));
  return { size: shown.size, runs: shown.extents.length, members: members.size };
}

async function parallel(items, worker) {
  let next = 0;
  const lanes = Array.from({ length: CLI_PARALLEL }, async () => {
    while (next < items.length) {
      const item = items[next];
      next += 1;
      await worker(item);
    }
  });
  await Promise.all(lanes);
}

async function attach(ctx, catalog, id) {
  await cliOk(ctx, catalog, ['vbd', 'add', `vd:${id}`, DEVICE, '--domain', DOMAIN, '--mode', 'w']);
}

async function prepareSingle(ctx, name) {
  const dir = path.join(ctx.dir, name);
  fs.mkdirSync(dir, { recursive: true });
  const catalog = path.join(dir, 'catalog.sqlite');
  const member = path.join(dir, 'member.img');
  await cliOk(ctx, catalog, ['format', member, '--size', `${ctx.sizeBytes / 1048576 + 64}M`]);
  const id = Number(await cliOk(ctx, catalog, ['create', `${ctx.sizeBytes / 1048576}M`]));
  await attach(ctx, catalog, id);
  const layout = await showExtents(ctx, catalog, id);
  return { catalog, exportName: EXPORT_NAME, files: [member], layout, needsFill: true, id };
}

async function formatFragmentedMembers(ctx, dir) {
  fs.rmSync(dir, { recursive: true, force: true });
  fs.mkdirSync(dir, { recursive: true });
  const catalog = path.join(dir, 'catalog.sqlite');
  const members = ['a.img', 'b.img'].map((name) => path.join(dir, name));
  for (const member of members) {
    await cliOk(ctx, catalog, [
      'format', member, '--size', `${FRAGMENT_MEMBER_BYTES / 1048576}M`, '--extent-size', '1M',
    ]);
  }
  return { catalog, members };
}

/** Fast path: one child process drives the CLI's catalog port (lib/frag-fill.js). */
async function fragmentInProcess(ctx, catalog, members) {
  const name = path.basename(path.dirname(catalog));
  const result = await proc.run(process.execPath, [
    path.join(__dirname, 'frag-fill.js'), ctx.repo, catalog, String(ctx.sizeBytes), ...members,
  ], { timeoutMs: 600000 });
  if (result.code !== 0) throw new Error(proc.tail(result.stderr, 2));
  const { id, small } = JSON.parse(result.stdout.trim());
  ctx.log(`${name}: ${small} one-extent VDs made in one process, half deleted, VD ${id} created`);
  return id;
}

/** Slow path: the same through `xvd` commands, two at a time (a few minutes). */
async function fragmentWithCli(ctx, catalog, members) {
  const name = path.basename(path.dirname(catalog));
  // Fill each member in turn with 1 MiB VDs (`--on`), so that within a member ids follow the
  // offsets; then deleting every other id leaves single-extent holes between live VDs.
  const ids = [];
  for (const member of members) {
    let fullReason = null;
    const idsMember = [];
    while (fullReason === null && ids.length + idsMember.length < FRAGMENT_FILL_MAX) {
      const created = [];
      await parallel(Array.from({ length: 64 }, (_, index) => index), async () => {
        const result = await cli(ctx, catalog, ['create', '1M', '--on', member]);
        if (result.code === 0) created.push(Number(result.stdout.trim()));
        else fullReason = proc.tail(result.stderr, 1);
      });
      idsMember.push(...created);
    }
    ctx.log(`${name}: ${idsMember.length} small VDs on ${path.basename(member)} ` +
      `(stopped: ${fullReason})`);
    ids.push(...idsMember.sort((a, b) => a - b));
  }
  await parallel(ids.filter((_, index) => index % 2 === 0), (id) =>
    cliOk(ctx, catalog, ['delete', String(id)]));
  return Number(await cliOk(ctx, catalog, ['create', `${ctx.sizeBytes / 1048576}M`]));
}

async function buildFragmented(ctx, dir) {
  let { catalog, members } = await formatFragmentedMembers(ctx, dir);
  let id;
  try {
    id = await fragmentInProcess(ctx, catalog, members);
  } catch (error) {
    ctx.log(`${path.basename(dir)}: in-process fill failed (${error.message}); ` +
      'using the CLI, slowly');
    ({ catalog, members } = await formatFragmentedMembers(ctx, dir));
    id = await fragmentWithCli(ctx, catalog, members);
  }
  await attach(ctx, catalog, id);
  fs.writeFileSync(path.join(dir, 'meta.json'), JSON.stringify({ id, builtAt: new Date() }));
  return { catalog, members, id };
}

async function prepareFragmented(ctx, name) {
  const dir = path.join(ctx.cacheDir, name);
  const catalog = path.join(dir, 'catalog.sqlite');
  const members = ['a.img', 'b.img'].map((name) => path.join(dir, name));
  let built = null;
  if (fs.existsSync(path.join(dir, 'meta.json')) && !ctx.rebuildPool) {
    const { id } = JSON.parse(fs.readFileSync(path.join(dir, 'meta.json'), 'utf8'));
    const layout = await showExtents(ctx, catalog, id).catch(() => null);
    if (layout && layout.runs >= FRAGMENT_RUNS_MIN && layout.members === 2) built = { id, layout };
  }
  if (built === null) {
    ctx.log(`${name}: building the fragmented pool (cached afterwards)`);
    const { id } = await buildFragmented(ctx, dir);
    built = { id, layout: await showExtents(ctx, catalog, id) };
  }
  const { layout } = built;
  if (layout.runs < FRAGMENT_RUNS_MIN || layout.members !== 2) {
    throw new Error(`fragmented VD has ${layout.runs} runs on ${layout.members} members`);
  }
  // filled on every run, cached pool or not: a run stopped before its fill would otherwise leave
  // holes in the VD, which read faster than data
  const { id } = built;
  return { catalog, exportName: EXPORT_NAME, files: members, layout, needsFill: true, id };
}

/** The pool of server `name` ('single' or 'fragmented'), made through ctx.repo's CLI. */
function preparePool(ctx, variant, name) {
  return variant === 'single' ? prepareSingle(ctx, name) : prepareFragmented(ctx, name);
}

module.exports = { EXPORT_NAME, cliPath, isDistStale, preparePool, serveFlags };
