/** fio's nbd engine with crc32c verification: a short bounded random-write/verify run. */
import t from 'tap';
import { hasTool, memoryDisk, runTool, startServer } from '../helpers/nbd-client';

t.test('fio --ioengine=nbd randwrite (64 KiB, qd32) with --verify=crc32c finds no corruption',
  async (t) => {
  if (!hasTool('fio')) return t.skip('fio missing', () => undefined);
  const engines = await runTool('fio', ['--enghelp']);
  if (!engines.stdout.includes('nbd')) {
    return t.skip('fio built without the nbd engine', () => undefined);
  }
  const { uri, server } = await startServer(t, [memoryDisk('disk', 64 * 1024 * 1024)]);
  const result = await runTool('fio', [
    '--name=verify', '--ioengine=nbd', `--uri=${uri()}`, '--rw=randwrite', '--bs=64k',
    '--iodepth=32', '--size=64M', '--runtime=5', '--time_based=0', '--verify=crc32c',
    '--do_verify=1', '--verify_fatal=1', '--verify_backlog=64', '--output-format=json',
    '--verify_state_save=0',
  ], { timeoutMs: 120_000 });
  t.equal(result.code, 0, result.stderr);
  const json = result.stdout.slice(result.stdout.indexOf('{'));
  const report = JSON.parse(json) as { jobs: { error: number;
    read: { io_bytes: number }; write: { io_bytes: number } }[] };
  const job = report.jobs[0];
  t.equal(job?.error, 0);
  t.ok((job?.write.io_bytes ?? 0) > 0, 'wrote data');
  const written = job?.write.io_bytes ?? 0;
  // verify_backlog: every 64 writes are read back and checked during the (time-capped) run
  t.ok(server.stats.bytesWritten >= written - 64 * 65536,
    'the server sent back what was written, up to one backlog (the data was verified)');
});
