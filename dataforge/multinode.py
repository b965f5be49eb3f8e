"""A Ray cluster over the nodes of a Slurm allocation, with vLLM's server on top.

`python -m dataforge.multinode --nodes N --gpus-per-node G --ray RAY -- <vLLM command>`

The serve job of a server with `engine.nodes` > 1 runs on the allocation's first node (the
Slurm profile asks for `--nodes=N --gres=gpu:G`). This starts a Ray head there, one Ray
worker on each other node (`srun --overlap` inside the same job), and then vLLM with
`--distributed-executor-backend ray`, which waits until the cluster offers the GPUs its
placement group needs. Everything runs in the serve job's guarded process group, so stopping
the server stops vLLM, the head and the worker step (srun cancels it on every node).

Standard library only: it runs with the workflow's Python, and calls Ray through the engine
environment's `ray` command.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys


def head_command(ray: str, address: str, port: int, gpus: int) -> list[str]:
    """The Ray head on this node."""
    return [ray, "start", "--block", "--head", f"--node-ip-address={address}",
            f"--port={port}", f"--num-gpus={gpus}"]  # fmt: skip


def workers_command(ray: str, address: str, port: int, nodes: int, gpus: int) -> list[str]:
    """One Ray worker on each of the other nodes of this Slurm job."""
    return [
        "srun",
        f"--jobid={os.environ.get('SLURM_JOB_ID', '')}",
        "--overlap",
        f"--nodes={nodes - 1}",
        f"--ntasks={nodes - 1}",
        "--ntasks-per-node=1",
        f"--exclude={socket.gethostname().split('.')[0]}",
        ray,
        "start",
        "--block",
        f"--address={address}:{port}",
        f"--num-gpus={gpus}",
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, required=True)
    parser.add_argument("--gpus-per-node", type=int, required=True)
    parser.add_argument("--ray", required=True, help="the engine environment's `ray` command")
    parser.add_argument("--port", type=int, default=6379)
    parser.add_argument("engine", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    engine = args.engine[1:] if args.engine[:1] == ["--"] else args.engine
    if args.nodes < 2 or not engine:
        parser.error("needs --nodes of 2 or more and the engine command after --")
    if "SLURM_JOB_ID" not in os.environ:
        parser.error("a multi-node server runs inside a Slurm job (no SLURM_JOB_ID is set)")
    address = socket.gethostbyname(socket.gethostname())
    children = [
        subprocess.Popen(head_command(args.ray, address, args.port, args.gpus_per_node)),
        subprocess.Popen(
            workers_command(args.ray, address, args.port, args.nodes, args.gpus_per_node)
        ),
    ]
    env = {**os.environ, "RAY_ADDRESS": f"{address}:{args.port}"}
    server = subprocess.Popen(engine, env=env)
    children.append(server)

    def stop(*_: object) -> None:
        for child in reversed(children):
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    code = server.wait()
    stop()
    return code


if __name__ == "__main__":
    sys.exit(main())
