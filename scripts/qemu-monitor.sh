#!/usr/bin/env bash
# qemu-monitor.sh - send one command to QEMU's human monitor on a unix socket.
#
# Usage: scripts/qemu-monitor.sh SOCKET COMMAND...
#   e.g. scripts/qemu-monitor.sh build/serial.sock nmi
# The socket is the one scripts/run-qemu.sh --monitor opened (make run and
# make test open LOG's name with .sock). Uses socat when installed, else
# Python 3. Exits non-zero when nothing listens on SOCKET.
set -euo pipefail

if [ $# -lt 2 ]; then
    echo "usage: $0 SOCKET COMMAND..." >&2
    exit 2
fi
socket=$1
shift
if [ ! -S "$socket" ]; then
    echo "qemu-monitor: no monitor socket at $socket (is make run / make test running with this LOG?)" >&2
    exit 1
fi
if command -v socat >/dev/null 2>&1; then
    printf '%s\n' "$*" | socat - "UNIX-CONNECT:$socket" >/dev/null
    exit 0
fi
command -v python3 >/dev/null 2>&1 || {
    echo "qemu-monitor: needs socat or python3" >&2
    exit 1
}
python3 - "$socket" "$*" <<'PY'
import socket, sys, time
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.connect(sys.argv[1])
s.settimeout(2)
try:
    s.recv(4096)  # the monitor's banner and prompt
except OSError:
    pass
s.sendall((sys.argv[2] + "\n").encode())
time.sleep(0.2)
s.close()
PY
