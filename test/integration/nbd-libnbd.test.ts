/**
 * Real libnbd clients (nbdinfo, nbdsh/python3-libnbd, nbdcopy) against the server on
 * 127.0.0.1:<ephemeral> and on a Unix socket, over in-memory exports.
 */
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import t from 'tap';
import {
  PYTHON_LIBNBD, hasTool, memoryDisk, runTool, startServer,
} from '../helpers/nbd-client';

const MiB = 1024 * 1024;

t.test('nbdinfo --list shows every export with its description', async (t) => {
  if (!hasTool('nbdinfo')) return t.skip('nbdinfo missing', () => undefined);
  const { port } = await startServer(t, [memoryDisk('disk', 8 * MiB),
    memoryDisk('ro', 4 * MiB, true)]);
  const result = await runTool('nbdinfo', ['--list', '--json', `nbd://127.0.0.1:${port}`]);
  t.equal(result.code, 0, result.stderr);
  const listing = JSON.parse(result.stdout) as { exports: Record<string, unknown>[] };
  const byName = new Map(listing.exports.map((entry) => [entry['export-name'], entry]));
  t.equal(byName.get('disk')?.['export-size'], 8 * MiB);
  t.equal(byName.get('disk')?.['description'], 'test disk disk');
  t.equal(byName.get('ro')?.['is_read_only'], true);
  t.equal(byName.get('disk')?.['can_multi_conn'], true);
});

t.test('nbdinfo --json over TCP and over the Unix socket reports size and capabilities',
  async (t) => {
    if (!hasTool('nbdinfo')) return t.skip('nbdinfo missing', () => undefined);
    const { uri, unixUri } = await startServer(t, [memoryDisk('disk', 8 * MiB)]);
    for (const target of [uri(), unixUri()]) {
      const result = await runTool('nbdinfo', ['--json', target]);
      t.equal(result.code, 0, result.stderr);
      const info = JSON.parse(result.stdout) as { exports: Record<string, unknown>[] };
      const disk = info.exports[0] ?? {};
      t.equal(disk['export-size'], 8 * MiB, target);
      for (const flag of ['can_flush', 'can_fua', 'can_trim', 'can_zero', 'can_fast_zero',
        'can_cache', 'can_df', 'can_multi_conn']) t.equal(disk[flag], true, flag);
      t.equal(disk['is_read_only'], false);
      t.equal(disk['block_size_maximum'], 32 * MiB);
    }
  });

t.test('nbdinfo --map reports written data and holes through base:allocation', async (t) => {
  if (!hasTool('nbdinfo')) return t.skip('nbdinfo missing', () => undefined);
  const disk = memoryDisk('disk', 4 * MiB);
  await disk.write(MiB, Buffer.alloc(MiB, 1), { fua: false });
  const { uri } = await startServer(t, [disk]);
  const result = await runTool('nbdinfo', ['--map', '--json', uri()]);
  t.equal(result.code, 0, result.stderr);
  const map = JSON.parse(result.stdout) as { offset: number; length: number; type: number }[];
  t.same(map.map((entry) => [entry.offset, entry.length, entry.type]),
    [[0, MiB, 3], [MiB, MiB, 0], [2 * MiB, 2 * MiB, 3]]);
});

const ERROR_SCRIPT = `
import json, sys, nbd
h = nbd.NBD()
h.set_strict_mode(0)
h.add_meta_context(nbd.CONTEXT_BASE_ALLOCATION)
h.connect_uri(sys.argv[1])
size = h.get_size()
def code(fn):
    try:
        fn()
        return 'OK'
    except nbd.Error as e:
        return e.errno
r = {}
r['write'] = code(lambda: h.pwrite(b'\\xab' * 4096, 0))
r['read'] = code(lambda: h.pread(4096, 0))
r['flush'] = code(lambda: h.flush())
r['fua_write'] = code(lambda: h.pwrite(b'\\x01' * 512, 512, nbd.CMD_FLAG_FUA))
r['trim'] = code(lambda: h.trim(4096, 8192))
r['zero'] = code(lambda: h.zero(4096, 8192))
r['zero_no_hole'] = code(lambda: h.zero(4096, 8192, nbd.CMD_FLAG_NO_HOLE))
r['zero_fast'] = code(lambda: h.zero(4096, 8192, nbd.CMD_FLAG_FAST_ZERO))
r['cache'] = code(lambda: h.cache(4096, 0))
r['df_read'] = code(lambda: h.pread(65536, 0, nbd.CMD_FLAG_DF))
seen = []
r['block_status'] = code(lambda: h.block_status(65536, 0,
    lambda ctx, off, ents, err: seen.append(len(ents)) or 0))
r['block_status_req_one'] = code(lambda: h.block_status(65536, 0,
    lambda ctx, off, ents, err: 0, nbd.CMD_FLAG_REQ_ONE))
r['read_past_end'] = code(lambda: h.pread(512, size))
r['write_past_end'] = code(lambda: h.pwrite(b'x' * 512, size))
r['zero_past_end'] = code(lambda: h.zero(512, size))
r['trim_past_end'] = code(lambda: h.trim(512, size))
r['read_zero_length'] = code(lambda: h.pread(0, 0))
r['read_unknown_flag'] = code(lambda: h.pread(512, 0, 1 << 10))
r['write_no_hole_flag'] = code(lambda: h.pwrite(b'x' * 512, 0, nbd.CMD_FLAG_NO_HOLE))
r['read_too_big'] = code(lambda: h.pread(32 * 1024 * 1024 + 512, 0))
r['read_32m'] = code(lambda: h.pread(32 * 1024 * 1024, 0))
r['data_back'] = h.pread(3072, 1024) == b'\\xab' * 3072
h.shutdown()
print(json.dumps(r))
`;

const RO_SCRIPT = `
import json, sys, nbd
h = nbd.NBD()
h.set_strict_mode(0)
h.connect_uri(sys.argv[1])
def code(fn):
    try:
        fn()
        return 'OK'
    except nbd.Error as e:
        return e.errno
r = {'ro': h.is_read_only()}
r['write'] = code(lambda: h.pwrite(b'x' * 512, 0))
r['trim'] = code(lambda: h.trim(512, 0))
r['zero'] = code(lambda: h.zero(512, 0))
r['read'] = code(lambda: h.pread(512, 0))
r['flush'] = code(lambda: h.flush())
print(json.dumps(r))
`;

t.test('nbdsh (strict mode off) gets the spec error code for every command', async (t) => {
  if (!fs.existsSync(PYTHON_LIBNBD) || !hasTool('nbdsh')) {
    return t.skip('python3-libnbd missing', () => undefined);
  }
  const { uri } = await startServer(t, [memoryDisk('disk', 64 * MiB)]);
  const result = await runTool(PYTHON_LIBNBD, ['-c', ERROR_SCRIPT, uri()]);
  t.equal(result.code, 0, result.stderr);
  t.same(JSON.parse(result.stdout), {
    write: 'OK', read: 'OK', flush: 'OK', fua_write: 'OK', trim: 'OK', zero: 'OK',
    zero_no_hole: 'OK', zero_fast: 'OK', cache: 'OK', df_read: 'OK', block_status: 'OK',
    block_status_req_one: 'OK',
    read_past_end: 'EINVAL', write_past_end: 'ENOSPC', zero_past_end: 'ENOSPC',
    trim_past_end: 'EINVAL', read_zero_length: 'EINVAL', read_unknown_flag: 'EINVAL',
    write_no_hole_flag: 'EINVAL', read_too_big: 'EINVAL', read_32m: 'OK', data_back: true,
  });
});

t.test('nbdsh on a read-only export: writes, trims and zeroes get EPERM', async (t) => {
  if (!fs.existsSync(PYTHON_LIBNBD)) return t.skip('python3-libnbd missing', () => undefined);
  const { unixUri } = await startServer(t, [memoryDisk('ro', 4 * MiB, true)]);
  const result = await runTool(PYTHON_LIBNBD, ['-c', RO_SCRIPT, unixUri('ro')]);
  t.equal(result.code, 0, result.stderr);
  t.same(JSON.parse(result.stdout), {
    ro: true, write: 'EPERM', trim: 'EPERM', zero: 'EPERM', read: 'OK', flush: 'OK',
  });
});

t.test('nbdcopy round trip (multi-connection) preserves a random image byte for byte',
  async (t) => {
    if (!hasTool('nbdcopy')) return t.skip('nbdcopy missing', () => undefined);
    const dir = t.testdir();
    const source = path.join(dir, 'source.img');
    const back = path.join(dir, 'back.img');
    const image = crypto.randomBytes(24 * MiB);
    image.fill(0, 8 * MiB, 16 * MiB); // a zero run, to exercise zeroing and holes
    fs.writeFileSync(source, image);
    const { uri } = await startServer(t, [memoryDisk('disk', 24 * MiB)]);
    const up = await runTool('nbdcopy', ['--flush', source, uri()]);
    t.equal(up.code, 0, up.stderr);
    const down = await runTool('nbdcopy', [uri(), back]);
    t.equal(down.code, 0, down.stderr);
    const digest = (file: string): string =>
      crypto.createHash('sha256').update(fs.readFileSync(file)).digest('hex');
    t.equal(digest(back), digest(source));
  });
