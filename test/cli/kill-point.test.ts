/**
 * XVD_TEST_KILL_AT names a step and the pass at which the process SIGKILLs itself; anything
 * malformed kills nothing, and an unset variable leaves every point inert.
 */
import t from 'tap';
import { killPoint, parseKillAt } from '../../src/cli/kill-point';

t.test('NAME and NAME@N parse; malformed text kills nothing', async (t) => {
  t.same(parseKillAt('import:chunk'), { name: 'import:chunk', pass: 1 });
  t.same(parseKillAt('import:chunk@20'), { name: 'import:chunk', pass: 20 });
  for (const text of [undefined, '', 'import', 'import:chunk@0', 'import:chunk@x', 'IMPORT:X',
    'import:chunk@1@2']) {
    t.equal(parseKillAt(text), null, String(text));
  }
});

t.test('points are inert when the variable is unset', async (t) => {
  t.equal(process.env['XVD_TEST_KILL_AT'], undefined);
  killPoint('import:chunk');
  t.pass('still running');
});
