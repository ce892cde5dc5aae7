/**
 * Replays every reproducer the wire fuzzer saved (fixtures/fuzz/wire/<name>.{bin,json}: the
 * bytes of each send and the steps, wire-fuzz.ts) against the target it failed on, a few times
 * each (the failures depended on timing), with the fuzz oracle (wire-fuzz-driver.ts): the
 * process survives, the connection closes, the replies are valid NBD, others are served.
 * A reproducer whose JSON carries `todo` is a known open defect: it is replayed as a todo.
 */
import t from 'tap';
import path from 'node:path';
import { listReproducers, loadReproducer } from '../helpers/wire-fuzz';
import { Servers, TARGETS, runStream, watchProcessFaults } from '../helpers/wire-fuzz-driver';

const FIXTURES = path.resolve(__dirname, '..', '..', 'fixtures', 'fuzz', 'wire');
const REPLAYS = 3;

watchProcessFaults(t);

const servers = new Servers();
t.teardown(() => servers.closeAll());

const files = listReproducers(FIXTURES);
t.ok(files.length > 0, 'there are reproducers to replay');

for (const file of files) {
  const { meta, stream } = loadReproducer(file);
  const todo = (meta as { todo?: string }).todo;
  t.test(`${path.basename(file, '.json')} (${meta.verdict} on ${meta.target})`,
    todo === undefined ? {} : { todo }, async (t) => {
      const target = TARGETS.find((candidate) => candidate.name === meta.target);
      if (target === undefined) throw new Error(`${file}: unknown target ${meta.target}`);
      for (let round = 0; round < REPLAYS; round++) {
        const outcome = await runStream(servers, target, stream, { checkHealth: true });
        t.equal(outcome.verdict, 'ok', `replay ${round + 1}: ${outcome.detail.slice(0, 400)}`);
        if (outcome.verdict !== 'ok') await servers.restart(target.kind);
      }
    });
}
