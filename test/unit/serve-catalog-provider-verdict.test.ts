import t from 'tap';
import type { ResolvedVbd } from '../../src/catalog';
import { describeResolved, judge, parseExportName } from '../../src/serve/export-verdict';

const MiB = 1024 * 1024;

function resolved(over: Partial<ResolvedVbd> = {}): ResolvedVbd {
  return {
    domain: 1, device: 'xvda', mode: 'w', size: 6 * MiB, vdId: 3, generation: 2,
    isDangling: false,
    extents: [{ path: '/pool', offset: 0, length: 4 * MiB },
      { path: '/pool', offset: 8 * MiB, length: 2 * MiB }],
    ...over,
  };
}

t.test('export names are DOMAIN/DEVICE, nothing else', async (t) => {
  t.same(parseExportName('12/xvda'), { domain: 12, device: 'xvda' });
  t.equal(parseExportName('xvda'), null, 'no domain');
  t.equal(parseExportName('1/a/b'), null, 'a slash in the device');
  t.equal(parseExportName('1234567890/xvda'), null, 'a domain of more than 9 digits');
  t.equal(parseExportName(`1/${'x'.repeat(65)}`), null, 'a device of more than 64 characters');
});

t.test('an unchanged resolution keeps the export', async (t) => {
  t.equal(judge(resolved(), resolved()), 'keep');
});

t.test('a removed VBD or a dead VD fences', async (t) => {
  t.equal(judge(resolved(), null), 'VBD removed');
  t.equal(judge(resolved(), resolved({ isDangling: true })),
    'VD deleted, expired or not yet zeroed');
});

t.test('another source or another mode fences', async (t) => {
  t.equal(judge(resolved(), resolved({ vdId: 4 })), 'VBD now maps another source');
  t.equal(judge(resolved(), resolved({ mode: 'r' })), 'VBD mode changed');
});

t.test('other extents at the same generation and size fence', async (t) => {
  const moved = resolved({ extents: [{ path: '/pool', offset: 0, length: 6 * MiB }] });
  t.equal(judge(resolved(), moved), 'VBD extents changed');
});

t.test('an enlarge whose old extents are a prefix replaces the export', async (t) => {
  const grown = resolved({ generation: 3, size: 9 * MiB, extents: [
    { path: '/pool', offset: 0, length: 4 * MiB },
    { path: '/pool', offset: 8 * MiB, length: 4 * MiB },
    { path: '/pool', offset: 16 * MiB, length: MiB }] });
  t.equal(judge(resolved(), grown), 'replace', 'the old last extent may grow');
});

t.test('an enlarge that moved an old extent fences', async (t) => {
  const moved = resolved({ generation: 3, size: 9 * MiB, extents: [
    { path: '/pool', offset: 4 * MiB, length: 4 * MiB },
    { path: '/pool', offset: 8 * MiB, length: 5 * MiB }] });
  t.equal(judge(resolved(), moved), 'VD extents changed');
  const cut = resolved({ generation: 3, size: 9 * MiB, extents: [
    { path: '/pool', offset: 0, length: 3 * MiB },
    { path: '/pool', offset: 8 * MiB, length: 6 * MiB }] });
  t.equal(judge(resolved(), cut), 'VD extents changed', 'an old extent other than the last shrank');
});

t.test('a smaller size fences', async (t) => {
  t.equal(judge(resolved(), resolved({ generation: 3, size: 5 * MiB })), 'VD shrank');
});

t.test('the description names the source, the mode and the domain', async (t) => {
  t.equal(describeResolved(resolved()), 'xvd vd 3, writable, domain 1');
  t.equal(describeResolved(resolved({ vdId: null, mode: 'r', domain: 2 })),
    'xvd device, read-only, domain 2');
});
