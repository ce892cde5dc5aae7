// The phase table (src/nbd/phase.ts) walked as a graph: every phase is reachable from the
// first, every one leads to finalized and nothing follows it, a hard close is allowed from every
// live phase, transmission never goes back to haggling, and nextPhase() refuses every move the
// table does not list.
import t from 'tap';
import {
  PHASE, PHASE_INITIAL, PHASE_TRANSITIONS, type Phase, closedPhaseOf, isClosedPhase,
  isReadingPhase, nextPhase,
} from '../../src/nbd/phase';

const PHASES = Object.values(PHASE) as Phase[];

function reachableFrom(start: Phase): Set<Phase> {
  const seen = new Set<Phase>([start]);
  const queue = [start];
  while (queue.length > 0) {
    for (const next of PHASE_TRANSITIONS[queue.shift()!]) {
      if (seen.has(next)) continue;
      seen.add(next);
      queue.push(next);
    }
  }
  return seen;
}

t.test('every phase is in the table and reachable from the first', (t) => {
  t.same(Object.keys(PHASE_TRANSITIONS).sort(), [...PHASES].sort());
  t.same([...reachableFrom(PHASE_INITIAL)].sort(), [...PHASES].sort());
  for (const phase of PHASES) {
    for (const next of PHASE_TRANSITIONS[phase]) t.ok(PHASES.includes(next), `${next} exists`);
  }
  t.end();
});

t.test('every phase leads to finalized, and finalized is the only end', (t) => {
  for (const phase of PHASES) {
    t.ok(reachableFrom(phase).has(PHASE.FINALIZED), `${phase} reaches finalized`);
    if (phase !== PHASE.FINALIZED) t.not(PHASE_TRANSITIONS[phase].length, 0, `${phase} goes on`);
  }
  t.same(PHASE_TRANSITIONS[PHASE.FINALIZED], []);
  t.end();
});

t.test('a hard close is allowed from every live phase, and lands in a closed one', (t) => {
  for (const phase of PHASES.filter((candidate) => !isClosedPhase(candidate))) {
    const closed = closedPhaseOf(phase);
    t.equal(nextPhase(phase, closed), closed, `${phase} -> ${closed}`);
    t.ok(isClosedPhase(closed));
  }
  t.equal(closedPhaseOf(PHASE.OPTION_BUSY), PHASE.OPTION_ORPHANED, 'a running handler is kept');
  t.same(PHASE_TRANSITIONS[PHASE.OPTION_ORPHANED], [PHASE.CLOSED]);
  t.end();
});

t.test('closing, closed and finalized never read; every other phase but busy ones does', (t) => {
  const notReading = PHASES.filter((phase) => !isReadingPhase(phase)).sort();
  t.same(notReading, [PHASE.CLOSED, PHASE.CLOSING, PHASE.FINALIZED, PHASE.OPTION_BUSY,
    PHASE.OPTION_ORPHANED, PHASE.TLS_HANDSHAKE].sort());
  t.same(PHASES.filter(isClosedPhase).sort(),
    [PHASE.CLOSED, PHASE.FINALIZED, PHASE.OPTION_ORPHANED].sort());
  t.end();
});

t.test('transmission never returns to option haggling', (t) => {
  const haggling: Phase[] = [PHASE.CLIENT_FLAGS, PHASE.OPTION_HEADER, PHASE.OPTION_PAYLOAD,
    PHASE.OPTION_BUSY, PHASE.TLS_HANDSHAKE];
  const after = reachableFrom(PHASE.REQUEST_HEADER);
  for (const phase of haggling) t.notOk(after.has(phase), `no way back to ${phase}`);
  t.end();
});

t.test('nextPhase refuses every move the table does not list', (t) => {
  let refused = 0;
  for (const from of PHASES) {
    for (const to of PHASES) {
      if (PHASE_TRANSITIONS[from].includes(to)) {
        t.equal(nextPhase(from, to), to);
      } else {
        t.throws(() => nextPhase(from, to), { code: 'ERR_ASSERTION' }, `${from} -> ${to}`);
        refused += 1;
      }
    }
  }
  t.ok(refused > 0);
  t.end();
});
