"""Run a mutant's pytest selection in a fork of a process that has already imported torch, OpenMM and mdtraj.

    python mutation/forkserver.py serve SOCKET            # in the tree being mutated (cwd and PYTHONPATH there)
    python mutation/forkserver.py run SOCKET PYTEST_ARGS [--then PYTEST_ARGS ...]  # cosmic-ray's test-command

On a loaded machine most of a mutant's cost is starting Python and importing torch/OpenMM/mdtraj, which is the
same for every mutant. The server imports those once (never ``latentbias`` nor any test module) and forks a
child per request; the child imports ``latentbias`` from the (mutated) files on disk, runs ``pytest.main`` on the
arguments and exits, so nothing of one mutant survives into the next. The client runs the stages separated by
``--then`` in turn (a small fast file first: most mutants die there before the big selection is even collected),
prints the children's output and exits with the first non-zero status (a child killed by a signal gives 128 +
signal; a child past ``TIMEOUT_S`` is killed, so keep it above the slowest clean run of the selection).
Bytecode is never written (``sys.dont_write_bytecode``), so a mutant's ``.pyc`` cannot be picked up later.
Used by the ``[cosmic-ray] test-command`` of the configs that set it (TESTING.md, "Mutation testing").
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
import tempfile

TIMEOUT_S = 280  # below cosmic-ray's 300 s timeout; a child past it is killed (the mutant counts as killed)


def _recv_all(conn: socket.socket) -> bytes:
    chunks = []
    while True:
        b = conn.recv(65536)
        if not b:
            return b"".join(chunks)
        chunks.append(b)


def serve(path: str) -> int:
    sys.dont_write_bytecode = True
    import numpy  # noqa: F401  (the imports every mutant's test run would repeat)
    import scipy.linalg  # noqa: F401
    import scipy.optimize  # noqa: F401
    import scipy.special  # noqa: F401
    import torch  # noqa: F401
    import openmm  # noqa: F401
    import openmm.app  # noqa: F401
    import openmm.unit  # noqa: F401
    import mdtraj  # noqa: F401
    try:
        import openmmtorch  # noqa: F401
    except ImportError:
        pass
    import pytest  # noqa: F401
    import _pytest.python  # noqa: F401
    assert not any(m == "latentbias" or m.startswith("latentbias.") for m in sys.modules), "latentbias preloaded"
    if os.path.exists(path):
        os.unlink(path)
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(path)
    srv.listen(1)
    print(f"forkserver ready on {path} (pid {os.getpid()})", flush=True)
    while True:
        conn, _ = srv.accept()
        with conn:
            req = json.loads(_recv_all(conn))
            fd, out = tempfile.mkstemp(prefix="forkserver-", suffix=".log")
            pid = os.fork()
            if pid == 0:  # child: fresh latentbias from disk, one pytest run
                try:
                    srv.close()
                    os.dup2(fd, 1)
                    os.dup2(fd, 2)
                    os.chdir(req["cwd"])
                    signal.alarm(int(req.get("timeout", TIMEOUT_S)))
                    import pytest as _pt

                    rc = _pt.main(req["args"])
                    sys.stdout.flush()
                    sys.stderr.flush()
                    os._exit(int(rc))
                except BaseException as exc:  # noqa: BLE001  (report, never return into the server loop)
                    os.write(2, f"forkserver child: {exc!r}\n".encode())
                    os._exit(3)
            os.close(fd)
            _, status = os.waitpid(pid, 0)
            rc = os.waitstatus_to_exitcode(status)
            rc = 128 - rc if rc < 0 else rc
            with open(out, "rb") as f:
                text = f.read().decode(errors="replace")
            os.unlink(out)
            conn.sendall(json.dumps({"rc": rc, "output": text}).encode())


def run(path: str, args: list[str]) -> int:
    """Run the pytest stages separated by ``--then`` in turn; stop at the first that fails (its status)."""
    stages: list[list[str]] = [[]]
    for a in args:
        if a == "--then":
            stages.append([])
        else:
            stages[-1].append(a)
    for stage in stages:
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        conn.connect(path)
        conn.sendall(json.dumps({"cwd": os.getcwd(), "args": stage}).encode())
        conn.shutdown(socket.SHUT_WR)
        reply = json.loads(_recv_all(conn))
        conn.close()
        sys.stdout.write(reply["output"])
        if int(reply["rc"]) != 0:
            return int(reply["rc"])
    return 0


def main(argv: list[str]) -> int:
    if len(argv) >= 2 and argv[0] == "serve":
        return serve(argv[1])
    if len(argv) >= 2 and argv[0] == "run":
        return run(argv[1], argv[2:])
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
