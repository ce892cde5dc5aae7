/** qemu's NBD client (qemu-img info/convert/compare/map, qemu-io patterns) against the server. */
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import t from 'tap';
import { hasTool, memoryDisk, runTool, startServer } from '../helpers/nbd-client';

const MiB = 1024 * 1024;

t.test('qemu-img info reports the virtual size over TCP and the Unix socket', async (t) => {
  if (!hasTool('qemu-img')) return t.skip('qemu-img missing', () => undefined);
  const { uri, unixUri } = await startServer(t, [memoryDisk('disk', 16 * MiB)]);
  for (const target of [uri(), unixUri()]) {
    const result = await runTool('qemu-img', ['info', '--output=json', target]);
    t.equal(result.code, 0, result.stderr);
    t.equal((JSON.parse(result.stdout) as { 'virtual-size': number })['virtual-size'], 16 * MiB);
  }
});

t.test('qemu-img convert writes an image, compare finds it identical, map sees the holes',
  async (t) => {
    if (!hasTool('qemu-img')) return t.skip('qemu-img missing', () => undefined);
    const source = path.join(t.testdir(), 'source.raw');
    const image = Buffer.alloc(16 * MiB);
    crypto.randomBytes(4 * MiB).copy(image, 2 * MiB);
    fs.writeFileSync(source, image);
    const { uri } = await startServer(t, [memoryDisk('disk', 16 * MiB)]);
    const convert = await runTool('qemu-img',
      ['convert', '-n', '-f', 'raw', '-O', 'raw', source, uri()]);
    t.equal(convert.code, 0, convert.stderr);
    const compare = await runTool('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', source, uri()]);
    t.equal(compare.code, 0, compare.stdout + compare.stderr);
    const map = await runTool('qemu-img', ['map', '--output=json', '-f', 'raw', uri()]);
    t.equal(map.code, 0, map.stderr);
    const entries = JSON.parse(map.stdout) as { start: number; length: number; data: boolean }[];
    const data = entries.filter((entry) => entry.data);
    t.same(data.map((entry) => [entry.start, entry.length]), [[2 * MiB, 4 * MiB]],
      'only the written range is data');
  });

t.test('qemu-io writes patterns (plain, FUA, zeroes, discard) and reads them back', async (t) => {
  if (!hasTool('qemu-io')) return t.skip('qemu-io missing', () => undefined);
  const { uri } = await startServer(t, [memoryDisk('disk', 16 * MiB)]);
  const commands = [
    'write -P 0xab 0 1M', 'write -f -P 0xcd 1M 64k', 'write -z 2M 256k',
    'write -P 0x11 3M 64k', 'discard 3M 64k', 'flush',
    'read -P 0xab 0 1M', 'read -P 0xcd 1M 64k', 'read -P 0 2M 256k',
  ];
  const result = await runTool('qemu-io',
    ['-f', 'raw', ...commands.flatMap((command) => ['-c', command]), uri()]);
  t.equal(result.code, 0, result.stderr);
  t.notMatch(result.stdout, /Pattern verification failed|error/i, result.stdout);
  t.equal((result.stdout.match(/^read /gm) ?? []).length, 3, 'three reads verified');
});
