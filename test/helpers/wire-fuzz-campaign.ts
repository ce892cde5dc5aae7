/**
 * wire-fuzz-campaign: the long wire-fuzzing campaign behind `npm run fuzz -- --minutes N
 * [--seed S] [--stdio-share F]` (scripts/fuzz.js loads this file through tap's TypeScript
 * loader and calls runLongCampaign). Nine tenths of the time (by default) go to the in-process
 * targets with coverage guidance (wire-fuzz-driver.ts runCampaign, failing streams minimized),
 * the rest to `xvd serve --stdio` (a process per stream). Every crash, hang or other failure is
 * written to fixtures/fuzz/wire/ (replayed forever by test/fuzz/wire-replay.test.ts). Prints
 * progress to stderr and a JSON summary to stdout; resolves with the number of findings.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { FuzzRandom, generateStream, saveReproducer } from './wire-fuzz';
import { noteFault, runCampaign } from './wire-fuzz-driver';
import { STDIO_PROFILE, prepareStdio, runStdioStream } from './wire-fuzz-stdio';

const FIXTURES = path.resolve(__dirname, '..', '..', 'fixtures', 'fuzz', 'wire');
const PROGRESS_EVERY = 500;

export interface LongCampaignOptions {
  minutes: number;
  seed: number;
  /** the share of the time spent on `xvd serve --stdio` */
  stdioShare: number;
}

async function stdioCampaign(seed: number, durationMs: number): Promise<{ streams: number;
  findings: string[] }> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'xvd-fuzz-stdio-'));
  const findings: string[] = [];
  let streams = 0;
  try {
    const catalog = await prepareStdio(dir);
    const random = new FuzzRandom(seed);
    const deadline = Date.now() + durationMs;
    for (; Date.now() < deadline; streams++) {
      const stream = generateStream(random, STDIO_PROFILE);
      const outcome = await runStdioStream(catalog, stream);
      if (outcome.verdict === 'ok') continue;
      findings.push(saveReproducer(FIXTURES, `${outcome.verdict}-stdio-s${seed}-${streams}`,
        stream, { target: 'stdio', verdict: outcome.verdict, detail: outcome.detail, seed }));
    }
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
  return { streams, findings };
}

export async function runLongCampaign(options: LongCampaignOptions): Promise<number> {
  process.on('uncaughtException', (error) => noteFault('uncaughtException', error));
  process.on('unhandledRejection', (error) => noteFault('unhandledRejection', error));
  const totalMs = options.minutes * 60_000;
  const stdioMs = Math.round(totalMs * options.stdioShare);
  const started = Date.now();
  process.stderr.write(`wire fuzz: seed ${options.seed}, ${options.minutes} min\n`);
  const result = await runCampaign({
    seed: options.seed, streamsMax: Number.MAX_SAFE_INTEGER, durationMs: totalMs - stdioMs,
    reproducerDir: FIXTURES, minimize: true,
    onStream: (index, target, outcome) => {
      if (outcome.verdict !== 'ok') {
        process.stderr.write(`#${index} ${target.name}: ${outcome.verdict}: ` +
          `${outcome.detail.slice(0, 200)}\n`);
      }
      if ((index + 1) % PROGRESS_EVERY === 0) {
        process.stderr.write(`${index + 1} streams, ${Math.round((Date.now() - started) / 1000)}` +
          ' s\n');
      }
    },
  });
  const stdio = stdioMs > 0 ? await stdioCampaign(options.seed, stdioMs)
    : { streams: 0, findings: [] };
  const summary = {
    seed: options.seed, minutes: options.minutes,
    streams: { ...result.streams, stdio: stdio.streams },
    bytesSent: result.bytesSent, corpus: result.corpus, coverage: result.coverage,
    findings: [...result.findings.map((finding) => finding.file), ...stdio.findings],
  };
  process.stdout.write(`${JSON.stringify(summary, null, 1)}\n`);
  return summary.findings.length;
}
