"""A Redis failover set on loopback: a master, a replica of it and one Redis Sentinel.

Debian's redis-server runs all three: `redis-server <conf> --sentinel` is Sentinel (the
`redis-sentinel` command is the same binary under another name). One sentinel with quorum 1
and a one-second down-after: a killed master is replaced within a few seconds.
"""

from __future__ import annotations

import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path

from backend import devstack

MASTER_NAME = "longhaul"
SENTINEL_PASSWORD = "sentinel-test-secret"
DOWN_AFTER_MS = 1000
FAILOVER_TIMEOUT_MS = 5000


def command(port: int, *args: str, password: str = "") -> list[str]:
    """One command to a Redis server or sentinel on loopback, answered as a list of lines."""
    argv = ["redis-cli", "-h", "127.0.0.1", "-p", str(port), "--no-auth-warning"]
    if password:
        argv += ["-a", password]
    done = subprocess.run([*argv, *args], capture_output=True, text=True, timeout=5, check=True)
    return done.stdout.splitlines()


def _start(name: str, argv: list[str], data_dir: Path, port: int) -> devstack.Process:
    data_dir.mkdir(parents=True, exist_ok=True)
    log_path = data_dir / f"{name}.log"
    with log_path.open("ab") as log:
        popen = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    process = devstack.Process(name, popen, f"redis://127.0.0.1:{port}/0", log_path)

    def answers() -> bool:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith((b"+PONG", b"-NOAUTH"))

    devstack.wait_until(answers, 15, name, process)
    return process


def start_replica(data_dir: Path, master_port: int) -> devstack.Process:
    port = devstack.free_port()
    argv = [
        devstack.redis_binary(),
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--dir",
        str(data_dir),
        "--save",
        "",
        "--appendonly",
        "yes",
        "--protected-mode",
        "no",
        "--replicaof",
        "127.0.0.1",
        str(master_port),
    ]
    return _start("redis-replica", argv, data_dir, port)


def start_sentinel(data_dir: Path, master_port: int) -> devstack.Process:
    port = devstack.free_port()
    data_dir.mkdir(parents=True, exist_ok=True)
    # Sentinel rewrites its config file as it learns (replicas, failovers): it must be its own.
    config = data_dir / "sentinel.conf"
    config.write_text(
        f"port {port}\n"
        "bind 127.0.0.1\n"
        "protected-mode no\n"
        f"dir {data_dir}\n"
        f"requirepass {SENTINEL_PASSWORD}\n"
        f"sentinel monitor {MASTER_NAME} 127.0.0.1 {master_port} 1\n"
        f"sentinel down-after-milliseconds {MASTER_NAME} {DOWN_AFTER_MS}\n"
        f"sentinel failover-timeout {MASTER_NAME} {FAILOVER_TIMEOUT_MS}\n"
        f"sentinel parallel-syncs {MASTER_NAME} 1\n"
    )
    argv = [devstack.redis_binary(), str(config), "--sentinel"]
    return _start("redis-sentinel", argv, data_dir, port)


@dataclass
class FailoverSet:
    master: devstack.Process
    replica: devstack.Process
    sentinel: devstack.Process

    @staticmethod
    def port_of(process: devstack.Process) -> int:
        return int(process.url.rsplit(":", 1)[1].split("/")[0])

    @property
    def sentinel_address(self) -> str:
        return f"127.0.0.1:{self.port_of(self.sentinel)}"

    def master_port(self) -> int:
        """The master's port as the sentinel names it now."""
        host_and_port = command(
            self.port_of(self.sentinel),
            "SENTINEL",
            "get-master-addr-by-name",
            MASTER_NAME,
            password=SENTINEL_PASSWORD,
        )
        return int(host_and_port[1])

    def replica_known(self) -> bool:
        """The replica is in sync and the sentinel knows it: a failover can promote it."""
        info = command(self.port_of(self.replica), "INFO", "replication")
        if "master_link_status:up" not in info:
            return False
        replicas = command(
            self.port_of(self.sentinel),
            "SENTINEL",
            "replicas",
            MASTER_NAME,
            password=SENTINEL_PASSWORD,
        )
        return str(self.port_of(self.replica)) in replicas and "slave" in replicas

    def env(self) -> dict[str, str]:
        """Settings that reach the master through the sentinel alone. REDIS_URL's host names
        nothing that exists: with sentinels only its db counts."""
        return {
            "REDIS_URL": "redis://named-by-the-sentinels/0",
            "REDIS_SENTINELS": self.sentinel_address,
            "REDIS_SENTINEL_MASTER": MASTER_NAME,
            "REDIS_SENTINEL_PASSWORD": SENTINEL_PASSWORD,
        }

    def stop(self) -> None:
        for process in (self.sentinel, self.replica, self.master):
            process.stop()


def start_failover_set(data_dir: Path) -> FailoverSet:
    master = devstack.start_redis(data_dir / "master")
    replica = sentinel = None
    try:
        replica = start_replica(data_dir / "replica", FailoverSet.port_of(master))
        sentinel = start_sentinel(data_dir / "sentinel", FailoverSet.port_of(master))
        found = FailoverSet(master, replica, sentinel)
        devstack.wait_until(found.replica_known, 30, "the sentinel's view of the replica")
        return found
    except BaseException:
        for process in (sentinel, replica, master):
            if process is not None:
                process.stop()
        raise
