/**
 * The kernel test host itself (test/helpers/testhost.ts, scripts/testhost/): a guest's failure,
 * an unreachable server and a hung guest are each reported as such, so that a PASS from the
 * kernel scenarios means something (test/integration/kernel-nbd.test.ts has the PASS cases).
 * They skip only where this machine cannot run the test host (not Linux x86-64, or not root
 * without the tools or a built host); a missing tool or a failed build as root fails them.
 */
import t from 'tap';
import { runGuest, testhostBroken, testhostSkipReason } from '../helpers/testhost';

const skip = testhostSkipReason() ?? false;
const HUNG_TIMEOUT_MS = 12_000;

t.test('the test host is ready: its tools are present and it builds', { skip }, async (t) => {
  t.equal(await testhostBroken(), null, 'no broken precondition');
});

t.test('a failing guest script is reported as FAIL with its reason and values', { skip },
  async (t) => {
    const result = await runGuest({
      script: '. /lib/xvd-test.sh\nstep probe\nvalue answer 42\nfail "deliberate failure"\n',
    });
    t.equal(result.ok, false, 'ok is false');
    t.equal(result.verdict, 'FAIL');
    t.match(result.reason, /deliberate failure/);
    t.equal(result.values.get('answer'), '42', 'value lines reach the host');
  });

t.test('nbd-client against no server fails under sh -e, named by its step', { skip },
  async (t) => {
    const script = '. /lib/xvd-test.sh\nmodprobe nbd\nstep "attach to nothing"\n' +
      'nbd-client 10.0.2.100 10809 /dev/nbd0 -N none\necho not reached\n';
    const result = await runGuest({ script });
    t.equal(result.verdict, 'FAIL');
    t.match(result.reason, /^exit=\d+ in step: attach to nothing$/);
    t.notMatch(result.console, /not reached/, 'sh -e stopped at the failing command');
    t.ok(result.connectionCount >= 1, 'the guest connection reached the host side');
  });

t.test('a guest that never finishes gets no verdict once its timeout passes', { skip },
  async (t) => {
    const result = await runGuest({ script: 'sleep 600\n', timeoutMs: HUNG_TIMEOUT_MS });
    t.equal(result.verdict, 'NONE');
    t.equal(result.ok, false);
    t.match(result.reason, /no verdict/);
  });
