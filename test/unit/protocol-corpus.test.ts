// Both request validators against one corpus (fixtures/requests/corpus.json, README.md there):
// for every case, the JS side (decodeRequest and validateRequest, src/nbd/validate.ts) and the
// data-path thread's (native/src/request.c through sys.requestStep) must reach the case's
// verdict: the same NBD errno, or the same hand-over to JS (bad magic, DISC, a WRITE above
// LIMITS.nbdPayloadMax), the same frame length, and the thread serves exactly the valid plain
// READs and WRITEs whose frame is whole. Also: the corpus is what its generator writes, and it
// holds every request header of the fuzzing fixtures. The addon is built in CI: without it this
// test fails rather than skips.
import t from 'tap';
import fs from 'node:fs';
import { LIMITS } from '../../src/limits';
import { NBD_CMD, NBD_E, REQUEST_LENGTH, nameOf } from '../../src/nbd/constants';
import { type ValidateContext, decodeRequest, validateRequest } from '../../src/nbd/validate';
import * as sys from '../../src/sys/index';

interface CorpusCase {
  name: string;
  context: string | ValidateContext;
  header: string;
  payload: number;
  expect: string;
}

interface Corpus {
  contexts: Record<string, ValidateContext>;
  cases: CorpusCase[];
}

interface Generator {
  renderCorpus(): string;
  fuzzCases(): CorpusCase[];
  keyOf(entry: CorpusCase): string;
  CORPUS_PATH: string;
}
// eslint-disable-next-line @typescript-eslint/no-require-imports
const generator = require('../../fixtures/requests/generate.js') as Generator;
const corpus = JSON.parse(fs.readFileSync(generator.CORPUS_PATH, 'utf8')) as Corpus;
const HAND_OVER = new Set(['bad-magic', 'disc', 'oversize-write']);
const S = sys.REQUEST_STEP;

/** A verdict in one shape for both sides. */
interface Verdict {
  /** an NBD_E name, or 'raw' where the stream goes to JS (bad magic, DISC, oversize WRITE) */
  errno: string;
  frameLength: number;
  /** 'serve' | 'forward' | 'short-payload' | 'raw' */
  step: string;
}

function contextOf(entry: CorpusCase): ValidateContext {
  const context = typeof entry.context === 'string' ? corpus.contexts[entry.context]
    : entry.context;
  if (context === undefined) throw new Error(`${entry.name}: no context ${JSON.stringify(entry.context)}`);
  return context;
}

function streamOf(entry: CorpusCase): Buffer {
  const header = Buffer.from(entry.header.replaceAll(' ', ''), 'hex');
  if (header.length !== REQUEST_LENGTH) throw new Error(`${entry.name}: header not 28 bytes`);
  return Buffer.concat([header, Buffer.alloc(entry.payload, 0xa5)]);
}

/** The JS side's verdict name: an NBD_E name, or why it stops framing requests. */
function jsExpectOf(stream: Buffer, context: ValidateContext): string {
  let request;
  try {
    request = decodeRequest(stream);
  } catch (error) {
    if ((error as { code?: string }).code === 'ERR_NBD_BAD_MAGIC') return 'bad-magic';
    throw error;
  }
  if (request.type === NBD_CMD.DISC) return 'disc';
  if (request.type === NBD_CMD.WRITE && request.length > LIMITS.nbdPayloadMax) {
    return 'oversize-write';
  }
  return nameOf(NBD_E, validateRequest(request, context));
}

function jsVerdict(stream: Buffer, expect: string): Verdict {
  if (HAND_OVER.has(expect)) return { errno: 'raw', frameLength: 0, step: 'raw' };
  const request = decodeRequest(stream);
  const frameLength = REQUEST_LENGTH + (request.type === NBD_CMD.WRITE ? request.length : 0);
  const isPlain = request.flags === 0 &&
    (request.type === NBD_CMD.READ || request.type === NBD_CMD.WRITE);
  const step = stream.length < frameLength ? 'short-payload'
    : expect === 'OK' && isPlain ? 'serve' : 'forward';
  return { errno: expect, frameLength, step };
}

function cVerdict(stream: Buffer, context: ValidateContext): Verdict {
  const options = (context.isStructured ? sys.REQUEST_STEP_OPTION.structured : 0) |
    (context.hasBaseAllocation ? sys.REQUEST_STEP_OPTION.baseAllocation : 0);
  const step = sys.requestStep(stream, context.size, context.eflags, options,
    context.blockSizeMin);
  const names: Record<number, string> = {
    [S.shortHeader]: 'short-header', [S.raw]: 'raw', [S.shortPayload]: 'short-payload',
    [S.serve]: 'serve', [S.forward]: 'forward',
  };
  if (step.kind === S.raw) return { errno: 'raw', frameLength: step.frameLength, step: 'raw' };
  return { errno: nameOf(NBD_E, step.errno), frameLength: step.frameLength,
    step: names[step.kind] ?? `kind ${step.kind}` };
}

t.test('the native addon is loaded (built in CI; this test never skips)', (t) => {
  t.ok(sys.isNative, 'native addon not loaded: run `npm run build:native`');
  t.end();
});

t.test('JS and C give every corpus case its verdict', (t) => {
  t.ok(corpus.cases.length > 1000, `${corpus.cases.length} cases`);
  if (!sys.isNative) {
    t.fail('native addon not loaded: the C side cannot be compared');
    t.end();
    return;
  }
  for (const entry of corpus.cases) {
    const stream = streamOf(entry);
    const context = contextOf(entry);
    const jsExpect = jsExpectOf(stream, context);
    t.equal(jsExpect, entry.expect, `${entry.name}: JS verdict`);
    const js = jsVerdict(stream, jsExpect);
    t.same(cVerdict(stream, context), js, `${entry.name}: C as JS`);
  }
  t.end();
});

t.test('the corpus has every command with every flag bit, and each hand-over', (t) => {
  const seen = new Set<string>();
  for (const entry of corpus.cases) {
    const stream = streamOf(entry);
    seen.add(`${stream.readUInt16BE(6)}/${stream.readUInt16BE(4)}`);
    seen.add(entry.expect);
  }
  for (const type of Object.values(NBD_CMD)) {
    for (let bit = 0; bit < 16; bit++) t.ok(seen.has(`${type}/${1 << bit}`), `${type}/${bit}`);
  }
  for (const expect of ['OK', 'EINVAL', 'EPERM', 'ENOSPC', ...HAND_OVER]) {
    t.ok(seen.has(expect), `some case expects ${expect}`);
  }
  t.end();
});

t.test('corpus.json is what its generator writes, with every fuzz fixture header', (t) => {
  const fix = 'run `node fixtures/requests/generate.js` and commit fixtures/requests/corpus.json';
  const inCorpus = new Set(corpus.cases.map((entry) => generator.keyOf(entry)));
  const fuzz = generator.fuzzCases();
  t.ok(fuzz.length > 0, `${fuzz.length} request headers in the fuzzing fixtures`);
  const missing = fuzz.filter((entry) => !inCorpus.has(generator.keyOf(entry)))
    .map((entry) => entry.name);
  t.same(missing, [], `fuzz fixture headers missing from the corpus: ${fix}`);
  t.ok(fs.readFileSync(generator.CORPUS_PATH, 'utf8') === generator.renderCorpus(),
    `fixtures/requests/corpus.json is stale: ${fix}`);
  t.end();
});
