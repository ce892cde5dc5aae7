/**
 * nbd/systemd: systemd socket activation (sd_listen_fds(3)): when LISTEN_PID is this process,
 * LISTEN_FDS listening sockets are inherited from fd 3 on. Not part of proto.md; nbdkit and
 * qemu-nbd support it, and libnbd's nbd_connect_systemd_socket_activation uses it.
 */
export const SD_LISTEN_FDS_START = 3;

/** The inherited listening fds `env` (the CLI passes process.env) describes, or [] when the
 * process was not socket-activated. */
export function listenFdsFromEnv(env: NodeJS.ProcessEnv, pid = process.pid): number[] {
  if (env['LISTEN_PID'] !== String(pid)) return [];
  const count = Number(env['LISTEN_FDS']);
  if (!Number.isSafeInteger(count) || count <= 0 || count > 64) return [];
  return Array.from({ length: count }, (_unused, index) => SD_LISTEN_FDS_START + index);
}
