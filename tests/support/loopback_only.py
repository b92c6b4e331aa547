"""Runs a module or script with every network connection outside this machine refused.

  python tests/support/loopback_only.py (-m MODULE | SCRIPT.py) [ARGS...]

An audit hook (`sys.addaudithook`) sees each `socket.connect` and `socket.getaddrinfo`
of the process and raises for any address that is not 127.0.0.1, ::1 or localhost (Unix
sockets pass), so a client that tried to reach a real endpoint (storage.googleapis.com, a
metadata server) would fail the command instead of reaching it. The gs:// tests run the
commands through it.
"""

import sys

import script_target  # tests/support/script_target.py (this script's folder is on the path)

_LOCAL = {"127.0.0.1", "::1", "localhost", "0.0.0.0"}


def _hook(event, args):
  if event == "socket.connect":
    address = args[1]
    if isinstance(address, tuple) and address and address[0] not in _LOCAL:
      raise ConnectionRefusedError(f"loopback_only: connection to {address!r} refused")
  elif event == "socket.getaddrinfo":
    host = args[0]
    host = host.decode() if isinstance(host, bytes) else host
    if host not in _LOCAL and host is not None:
      raise ConnectionRefusedError(f"loopback_only: lookup of {host!r} refused")


def main():
  target = sys.argv[1:]
  if not target:
    sys.exit(__doc__)
  sys.addaudithook(_hook)
  script_target.run(target)


if __name__ == "__main__":
  main()
