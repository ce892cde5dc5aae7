/**
 * test/helpers/stable: waits until a server statistic stops moving, so that a test asserts what
 * the server holds once it has done all it will do, never what it held after a guessed sleep.
 */

/**
 * Polls `sample` every `intervalMs` until it returned the same value `rounds` times in a row
 * (the server has settled) or timeoutMs passed; resolves with the last value and whether it
 * settled.
 */
export async function whenStable<T>(sample: () => T, options: { rounds?: number;
  intervalMs?: number; timeoutMs?: number } = {}): Promise<{ value: T; isStable: boolean }> {
  const rounds = options.rounds ?? 5;
  const intervalMs = options.intervalMs ?? 100;
  const deadline = Date.now() + (options.timeoutMs ?? 20_000);
  let value = sample();
  let key = JSON.stringify(value);
  let same = 1;
  while (same < rounds && Date.now() < deadline) {
    await new Promise((resolve) => setTimeout(resolve, intervalMs));
    value = sample();
    const next = JSON.stringify(value);
    same = next === key ? same + 1 : 1;
    key = next;
  }
  return { value, isStable: same >= rounds };
}
