/**
 * status-watch: the terminal side of `xvd status --watch`: a report taken every second and
 * shown as one screen (status-view.ts watchLines), with rates over the last interval.
 *
 * On a terminal the screen is drawn in the alternate screen buffer with the cursor hidden,
 * each frame from the top left, lines cut at the terminal's width and to its height; stdin is
 * put in raw mode so that `q` (or Ctrl-C, which raw mode delivers as a byte) quits. Quitting,
 * SIGINT, SIGTERM, SIGHUP or a failure all restore the terminal as it was (main screen,
 * cursor, cooked mode) before the command returns. Not on a terminal (a pipe, a log), each
 * frame is printed after the last, plain, until a signal.
 */
import type { StatusReport, StatusSample } from './status-view';
import { watchLines } from './status-view';

const ENTER = '\x1b[?1049h\x1b[?25l'; // alternate screen, cursor hidden
const LEAVE = '\x1b[?25h\x1b[?1049l';
const HOME = '\x1b[H';
const CLEAR_LINE_END = '\x1b[K';
const CLEAR_BELOW = '\x1b[J';
const QUIT_KEYS = new Set(['q', 'Q', '\x03', '\x04']);
const SIGNALS: readonly NodeJS.Signals[] = ['SIGINT', 'SIGTERM', 'SIGHUP'];

function frameOf(lines: string[], isTty: boolean): string {
  if (!isTty) return `${lines.join('\n')}\n\n`;
  const width = Math.max(20, process.stdout.columns);
  const height = Math.max(1, process.stdout.rows);
  const shown = lines.slice(0, height).map((line) => [...line].slice(0, width).join(''));
  return HOME + shown.map((line) => line + CLEAR_LINE_END).join('\n') + CLEAR_BELOW;
}

/** Runs the watch until quit; `sample` takes one report. Returns the exit code (0). */
export async function runWatch(sample: () => Promise<StatusReport>, intervalMs: number,
): Promise<number> {
  const output = process.stdout;
  const input = process.stdin;
  const isTty = output.isTTY === true;
  const isRaw = isTty && input.isTTY === true;
  let quit: () => void = () => undefined;
  const quitting = new Promise<void>((resolve) => (quit = resolve));
  let isQuitting = false;
  void quitting.then(() => (isQuitting = true));
  const onKey = (chunk: Buffer): void => {
    if ([...chunk.toString('latin1')].some((key) => QUIT_KEYS.has(key))) quit();
  };
  const onSignal = (): void => quit();
  if (isTty) output.write(ENTER);
  if (isRaw) {
    input.setRawMode(true);
    input.on('data', onKey);
    input.resume();
  }
  for (const signal of SIGNALS) process.on(signal, onSignal);
  try {
    let previous: StatusSample | null = null;
    while (!isQuitting) {
      const current: StatusSample = { atMs: performance.now(), report: await sample() };
      if (isQuitting) break;
      const clock = new Date().toTimeString().slice(0, 8);
      output.write(frameOf(watchLines(previous, current, clock), isTty));
      previous = current;
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([quitting, new Promise((resolve) => {
        timer = setTimeout(resolve, Math.max(0, current.atMs + intervalMs - performance.now()));
      })]);
      clearTimeout(timer);
    }
  } finally {
    for (const signal of SIGNALS) process.off(signal, onSignal);
    if (isRaw) {
      input.off('data', onKey);
      input.setRawMode(false);
      input.pause();
    }
    if (isTty) output.write(LEAVE);
  }
  return 0;
}
