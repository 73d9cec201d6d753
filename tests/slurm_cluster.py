"""A real one-node SLURM cluster for tests: Debian's slurm-wlm and munge, all state in a temp dir.

Usage (a pytest fixture)::

    @pytest.fixture(scope="module")
    def slurm():
        with slurm_cluster() as cluster:
            yield cluster

Inside the block ``SLURM_CONF`` points at the cluster's own slurm.conf, so ``sbatch``, ``squeue``
and Snakemake's SLURM executor talk to it. The cluster (DESIGN.md section 5): this host as the
only node with ``CPUs=2``, partition ``debug`` (Default=YES), no accounting database (status only
from ``squeue``, which keeps finished jobs for ``MinJobAge=600`` s) and no GRES: GPU jobs cannot
be scheduled here, callers must ask for ``gpu=0``.

munged runs with its own key, socket and pid file in the temp dir; slurmctld and slurmd run in
the foreground (``-D``) as child processes on free ports. On exit every job is cancelled and the
three daemons (only the processes started here) are stopped, then the temp dir is removed, so
the block can be entered again, or twice at once, without leftovers. Where SLURM is missing and
cannot be installed (no apt-get, not root) the calling test is skipped with the reason.

Installing packages and starting daemons changes the host, so it happens only when asked:
``DETRPRUNE_TEST_SLURM=1`` (``make test-slurm`` and ``.ci/run`` set it); otherwise the block
skips the calling test and says how to opt in.
"""

from __future__ import annotations

import contextlib
import getpass
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

PARTITION = "debug"
NODE_CPUS = 2
MEMORY_MARGIN_MB = 2048
DAEMONS = ("slurmctld", "slurmd", "munged")
# snakemake-executor-plugin-slurm-jobstep (0.6.1) removes every SLURM_* variable but the job's
# identity, SLURM_CONF included, before the `srun` that runs a job's command inside its
# allocation. That srun then finds no configuration unless the compiled-in default path has
# one, so the cluster links its slurm.conf there while it runs (only if nothing is there).
DEFAULT_CONF = Path("/etc/slurm/slurm.conf")
OPT_IN = "DETRPRUNE_TEST_SLURM"
NOT_OPTED_IN = (
    f"real-SLURM tests install slurm-wlm/munge and start daemons on this host: set {OPT_IN}=1 "
    "or run `make test-slurm` to run them"
)


def opted_in() -> bool:
    return os.environ.get(OPT_IN, "") not in ("", "0")


@dataclass
class SlurmCluster:
    root: Path
    conf: Path
    node: str
    partition: str
    cpus: int
    memory_mb: int
    env: dict[str, str] = field(repr=False)

    def run(self, *command: str, check: bool = True) -> subprocess.CompletedProcess:
        """A SLURM client command (sinfo, squeue, sbatch, ...) against this cluster."""
        return subprocess.run(
            command, env=self.env, capture_output=True, text=True, check=check, timeout=60
        )

    def log(self, daemon: str) -> str:
        path = self.root / "log" / f"{daemon}.log"
        return path.read_text(errors="replace") if path.exists() else ""


def ensure_slurm_installed() -> None:
    """Install slurm-wlm and munge with apt if a daemon is missing; skip where we cannot."""
    if all(shutil.which(d) or Path("/usr/sbin", d).exists() for d in DAEMONS):
        return
    if shutil.which("apt-get") is None:
        pytest.skip("SLURM (slurmctld/slurmd/munged) is not installed and apt-get is unavailable")
    if os.geteuid() != 0:
        pytest.skip("SLURM is not installed and installing slurm-wlm/munge with apt needs root")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (
        ["apt-get", "update", "-qq"],
        ["apt-get", "install", "-y", "-qq", "slurm-wlm", "munge"],
    ):
        run = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900)
        if run.returncode != 0:
            pytest.skip(f"could not install SLURM: {' '.join(command)}: {run.stderr[-800:]}")


def _daemon(name: str) -> str:
    path = shutil.which(name) or f"/usr/sbin/{name}"
    if not Path(path).exists():
        pytest.skip(f"{name} not found after installing slurm-wlm and munge")
    return path


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _memory_mb() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) // 1024
    raise RuntimeError("no MemTotal in /proc/meminfo")


def write_slurm_conf(root: Path, node: str, munge_socket: Path, memory_mb: int) -> Path:
    ctld_port, slurmd_port = _free_port(), _free_port()
    while slurmd_port == ctld_port:
        slurmd_port = _free_port()
    conf = root / "slurm.conf"
    conf.write_text(
        f"""\
ClusterName=detrprune-test
SlurmctldHost={node}(127.0.0.1)
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={munge_socket}
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool/%n
SlurmctldPidFile={root}/run/slurmctld.pid
SlurmdPidFile={root}/run/slurmd.pid
SlurmctldLogFile={root}/log/slurmctld.log
SlurmdLogFile={root}/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
MpiDefault=none
SchedulerType=sched/backfill
MinJobAge=600
ReturnToService=2
SlurmdParameters=config_overrides
SlurmctldTimeout=30
SlurmdTimeout=60
NodeName={node} NodeAddr=127.0.0.1 CPUs={NODE_CPUS} RealMemory={memory_mb} State=UNKNOWN
PartitionName={PARTITION} Nodes={node} Default=YES MaxTime=INFINITE State=UP
"""
    )
    return conf


def _start(command: list[str], log: Path, env: dict[str, str]) -> subprocess.Popen:
    handle = open(log, "ab")  # noqa: SIM115 - closed with the process in _stop
    process = subprocess.Popen(
        command, stdout=handle, stderr=subprocess.STDOUT, env=env, start_new_session=True
    )
    process._log_handle = handle  # type: ignore[attr-defined]
    return process


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
    process._log_handle.close()  # type: ignore[attr-defined]


def _wait_for(predicate, timeout: float, what: str, cluster_root: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.5)
    logs = "\n".join(
        f"--- {p.name}\n{p.read_text(errors='replace')[-2000:]}"
        for p in sorted((cluster_root / "log").glob("*.log"))
    )
    raise RuntimeError(f"SLURM test cluster: timed out waiting for {what}\n{logs}")


@contextlib.contextmanager
def slurm_cluster(start_timeout: float = 60) -> Iterator[SlurmCluster]:
    """Start munged, slurmctld and slurmd on this host; stop them and remove all state after."""
    if not opted_in():
        pytest.skip(NOT_OPTED_IN)
    ensure_slurm_installed()
    munged, slurmctld, slurmd = (_daemon(name) for name in ("munged", "slurmctld", "slurmd"))
    mungekey = shutil.which("mungekey") or "/usr/sbin/mungekey"

    root = Path(tempfile.mkdtemp(prefix="slurm-test-"))
    processes: list[subprocess.Popen] = []
    previous_conf = os.environ.get("SLURM_CONF")
    linked_default = False
    try:
        for sub in ("state", "spool", "run", "log", "munge"):
            (root / sub).mkdir(mode=0o700)
        node = socket.gethostname().split(".")[0]
        memory_mb = max(1024, _memory_mb() - MEMORY_MARGIN_MB)

        # munge: own key, socket, pid and seed files, so a system munged (if any) is untouched.
        key = root / "munge" / "munge.key"
        if Path(mungekey).exists():
            subprocess.run([mungekey, "--create", f"--keyfile={key}"], check=True)
        else:
            key.write_bytes(os.urandom(1024))
        key.chmod(0o400)
        munge_socket = root / "munge" / "munge.socket"
        env = {**os.environ}
        processes.append(
            _start(
                [
                    munged,
                    "--foreground",
                    "--force",
                    f"--socket={munge_socket}",
                    f"--key-file={key}",
                    f"--pid-file={root / 'munge' / 'munged.pid'}",
                    f"--seed-file={root / 'munge' / 'munged.seed'}",
                    f"--log-file={root / 'log' / 'munged.log'}",
                ],
                root / "log" / "munged.stdout",
                env,
            )
        )
        _wait_for(munge_socket.exists, start_timeout, "munged's socket", root)

        conf = write_slurm_conf(root, node, munge_socket, memory_mb)
        if DEFAULT_CONF.is_symlink() and not DEFAULT_CONF.exists():
            DEFAULT_CONF.unlink()  # left by a test cluster that was killed
        if DEFAULT_CONF.exists() or DEFAULT_CONF.is_symlink():
            pytest.skip(
                f"{DEFAULT_CONF} exists (a real or another test cluster): jobs' inner srun, which "
                "ignores SLURM_CONF, would use it"
            )
        DEFAULT_CONF.parent.mkdir(parents=True, exist_ok=True)
        DEFAULT_CONF.symlink_to(conf)
        linked_default = True
        env = {**os.environ, "SLURM_CONF": str(conf)}
        cluster = SlurmCluster(root, conf, node, PARTITION, NODE_CPUS, memory_mb, env)
        processes.append(
            _start([slurmctld, "-D", "-c", "-f", str(conf)], root / "log" / "slurmctld.stdout", env)
        )
        processes.append(
            _start([slurmd, "-D", "-f", str(conf), "-N", node], root / "log" / "slurmd.stdout", env)
        )

        def node_idle() -> bool:
            for process in processes:
                if process.poll() is not None:
                    raise RuntimeError(
                        f"SLURM test cluster: {process.args[0]} exited ({process.returncode})\n"
                        + "\n".join(cluster.log(d)[-2000:] for d in DAEMONS)
                    )
            state = cluster.run("sinfo", "-h", "-N", "-o", "%t", check=False)
            return state.returncode == 0 and state.stdout.strip() == "idle"

        _wait_for(node_idle, start_timeout, f"node {node} to be idle in sinfo", root)
        os.environ["SLURM_CONF"] = str(conf)
        yield cluster
    finally:
        if previous_conf is None:
            os.environ.pop("SLURM_CONF", None)
        else:
            os.environ["SLURM_CONF"] = previous_conf
        if len(processes) == 3 and processes[1].poll() is None:
            # Cancel what is left (a failed test may leave jobs), so slurmd kills their steps.
            subprocess.run(
                ["scancel", "--full", "--user", getpass.getuser()],
                env={**os.environ, "SLURM_CONF": str(root / "slurm.conf")},
                capture_output=True,
                timeout=30,
            )
            time.sleep(1)
        for process in reversed(processes):  # slurmd, slurmctld, then munged
            _stop(process)
        if linked_default and DEFAULT_CONF.is_symlink():
            DEFAULT_CONF.unlink()
        shutil.rmtree(root, ignore_errors=True)
