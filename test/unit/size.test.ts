import t from 'tap';
import { formatSize, parseSize } from '../../src/size';
import { UsageError } from '../../src/errors';

const MIB = 1024 * 1024;

t.test('a bare number is MiB, as in the seed tools', async (t) => {
  t.equal(parseSize('1'), MIB);
  t.equal(parseSize('64'), 64 * MIB);
});

t.test('suffixes are powers of 1024 whatever their case and spelling', async (t) => {
  t.equal(parseSize('512B'), 512);
  t.equal(parseSize('2s'), 1024);
  t.equal(parseSize('4k'), 4096);
  t.equal(parseSize('4KB'), 4096);
  t.equal(parseSize('4KiB'), 4096);
  t.equal(parseSize('3M'), 3 * MIB);
  t.equal(parseSize('3mib'), 3 * MIB);
  t.equal(parseSize('2G'), 2 * 1024 * MIB);
  t.equal(parseSize('2gb'), 2 * 1024 * MIB);
  t.equal(parseSize('1T'), 1024 * 1024 * MIB);
  t.equal(parseSize('1TiB'), 1024 * 1024 * MIB);
  t.equal(parseSize(' 1 G '), 1024 * MIB);
});

t.test('a fraction is accepted when it makes whole bytes', async (t) => {
  t.equal(parseSize('1.5M'), 1572864);
  t.equal(parseSize('0.5K'), 512);
  t.equal(parseSize('1.25'), 1.25 * MIB);
});

t.test('bad sizes are refused with ERR_SIZE_INVALID naming the argument', async (t) => {
  const bad = ['0', '0K', '-1', '-5M', 'abc', '1.5Q', '', ' ', '1.3B', '0.1K', 'M', '1..5M',
    '9007199254740992B', '99999999999T', '1e3', '0x10', '1 2', '1.'];
  for (const text of bad) {
    let caught: unknown;
    try {
      parseSize(text, '--extent-size');
    } catch (error) {
      caught = error;
    }
    t.ok(caught instanceof UsageError, `refuses '${text}'`);
    t.equal((caught as UsageError).code, 'ERR_SIZE_INVALID');
    t.match((caught as UsageError).message, /^--extent-size '/);
  }
});

t.test('the largest safe integer is accepted and one more is not', async (t) => {
  t.equal(parseSize(`${Number.MAX_SAFE_INTEGER}B`), Number.MAX_SAFE_INTEGER);
  t.throws(() => parseSize(`${Number.MAX_SAFE_INTEGER + 1}B`));
});

t.test('formatSize prints binary units with two decimals', async (t) => {
  t.equal(formatSize(0), '0 B');
  t.equal(formatSize(512), '512 B');
  t.equal(formatSize(1024), '1.00 KiB');
  t.equal(formatSize(1024 * MIB), '1.00 GiB');
  t.equal(formatSize(1572864), '1.50 MiB');
  t.equal(formatSize(4 * 1024 * 1024 * MIB), '4.00 TiB');
  t.equal(formatSize(200 * MIB), '200.0 MiB');
});
