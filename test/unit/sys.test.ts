import t from 'tap';
import fs from 'node:fs';
import path from 'node:path';
import { LIMITS } from '../../src/limits';
import * as sys from '../../src/sys/index';

t.test('the native addon is loaded on Linux', async (t) => {
  t.equal(sys.isNative, true);
});

t.test('the data-path thread\'s bounds are the ones in LIMITS', async (t) => {
  const C = sys.constants;
  t.equal(C.DATAPATH_PAYLOAD_MAX, LIMITS.nbdPayloadMax);
  t.equal(C.DATAPATH_SPARSE_MIN, LIMITS.nbdSparseReadMin);
  t.equal(C.DATAPATH_LOWAT_MIN, LIMITS.nbdRecvLowWaterMin);
  t.equal(C.DATAPATH_LOWAT_MAX, LIMITS.nbdRecvLowWaterMax);
  t.equal(C.DATAPATH_FORWARD_MAX, LIMITS.nbdDatapathForwardMax);
  t.equal(C.DATAPATH_SEND_BATCH, LIMITS.nbdDatapathSendBatch);
  t.equal(C.DATAPATH_SPIN_MAX_US, LIMITS.nbdDatapathSpinMaxUs);
  t.equal(C.DATAPATH_SPIN_LENGTH_MAX, LIMITS.nbdDatapathSpinLengthMax);
});

t.test('punchHole makes a written range read as zeros and SEEK_DATA skips it', async (t) => {
  const dir = t.testdir();
  const file = path.join(dir, 'img');
  const fd = fs.openSync(file, 'w+');
  t.teardown(() => fs.closeSync(fd));
  fs.ftruncateSync(fd, 1 << 20);
  fs.writeSync(fd, Buffer.alloc(65536, 0xaa), 0, 65536, 262144);
  fs.fdatasyncSync(fd);
  t.equal(await sys.seekData(fd, 0), 262144);
  await sys.punchHole(fd, 262144, 65536);
  const back = Buffer.alloc(65536, 1);
  fs.readSync(fd, back, 0, 65536, 262144);
  t.ok(back.equals(Buffer.alloc(65536)), 'reads zeros');
  t.equal(await sys.seekData(fd, 0), -1, 'no data left');
});

t.test('a block-device ioctl on a regular file fails with ENOTTY as an IoError', async (t) => {
  const fd = fs.openSync(path.join(t.testdir(), 'f'), 'w+');
  t.teardown(() => fs.closeSync(fd));
  t.throws(() => sys.blockDeviceSize(fd), { code: 'ERR_IO_SYSCALL', errno: 'ENOTTY' });
});

t.test('bad arguments are caught before the addon is called', async (t) => {
  t.throws(() => sys.punchHole(3, -1, 10));
  t.throws(() => sys.punchHole(3, 0, 0));
});
