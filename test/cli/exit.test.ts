import t from 'tap';
import { XvdError, IoError, UsageError } from '../../src/errors';
import { errorLine, EXIT, exitCodeOf } from '../../src/cli/exit';

t.test('usage and size errors exit 2', async (t) => {
  t.equal(exitCodeOf(new UsageError('ERR_USAGE', 'usage: x')), EXIT.usage);
  t.equal(exitCodeOf(new UsageError('ERR_SIZE_INVALID', "size 'abc': bad")), EXIT.usage);
});

t.test('catalog open and version errors exit 3', async (t) => {
  t.equal(exitCodeOf(new XvdError('ERR_CATALOG_OPEN', 'catalog: x')), EXIT.catalog);
  t.equal(exitCodeOf(new XvdError('ERR_CATALOG_VERSION', 'catalog: x')), EXIT.catalog);
});

t.test('check faults exit 4 and other refusals exit 1', async (t) => {
  t.equal(exitCodeOf(new XvdError('ERR_CLI_CHECK_FAULTS', 'check: 2 faults')), EXIT.faults);
  t.equal(exitCodeOf(new UsageError('ERR_CLI_MEMBER_OVERLAP', 'format: x')), EXIT.failed);
  t.equal(exitCodeOf(new IoError('ENOSPC', 'write', 'write: ENOSPC')), EXIT.failed);
});

t.test('anything that is not an XvdError is internal: exit 70', async (t) => {
  t.equal(exitCodeOf(new TypeError('boom')), EXIT.internal);
  t.equal(exitCodeOf('string'), EXIT.internal);
});

t.test('the error line is one line prefixed xvd:', async (t) => {
  t.equal(errorLine(new UsageError('ERR_USAGE', 'a\n  b')), 'xvd: a b\n');
  t.equal(errorLine(new RangeError('x\ny')), 'xvd: internal error: x y\n');
});
