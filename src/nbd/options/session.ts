/**
 * nbd/options/session: what an option handler may see and do (proto.md "Option haggling").
 * connection.ts implements it; handlers stay small and testable against a fake.
 */
import type { Logger } from '../../log';
import type { Domain, ExportHandle, ExportProvider } from '../provider';

export interface MetaContextState {
  /** the export name given to SET_META_CONTEXT; GO to another name drops the contexts */
  exportName: string;
  hasBaseAllocation: boolean;
}

/** After a handler: keep haggling, start transmission, close politely, close hard, or TLS. */
export type OptionOutcome = 'continue' | 'transmission' | 'abort' | 'disconnect' | 'starttls';

export interface OptionSession {
  readonly provider: ExportProvider;
  readonly domain: Domain;
  readonly isTls: boolean;
  readonly canStartTls: boolean;
  readonly noZeroes: boolean;
  isStructured: boolean;
  metaContext: MetaContextState | null;
  readonly log: Logger;
  reply(option: number, type: number, payload?: Buffer): void;
  /** An error reply whose payload is a message (cut to LIMITS.nbdEchoLengthMax). */
  replyError(option: number, type: number, message: string): void;
  /** Raw bytes (the NBD_OPT_EXPORT_NAME reply has no option-reply header). */
  sendRaw(frame: Buffer): void;
  /** Binds the export; the handler then returns 'transmission'. */
  bind(handle: ExportHandle, blockSizeMin: number): void;
  /** The transmission flags this session would advertise for an export. */
  eflagsFor(handle: ExportHandle): number;
}

export type OptionHandler = (
  session: OptionSession, option: number, payload: Buffer,
) => Promise<OptionOutcome>;
