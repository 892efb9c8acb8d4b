"""Test hosts in Linux network namespaces, joined by a bridge in a namespace of their own.

Each test host is a network namespace (``ip netns add``) with loopback up and one veth whose
other end sits in the test's own "hub" namespace, on a bridge there. Its address is in a
private subnet that exists only inside these namespaces, and no namespace has a default
route: nothing sent there can leave them, and the machine's own namespace (its addresses,
routes and links) is never touched, not even by a veth end. Names carry the test process's
pid, so runs by other people on the same machine do not collide; the leftovers of an earlier
run with the same pid (one that crashed, whose pid came round again) are removed first.

Every call here is blocking (``ip`` subprocesses): from a test's event loop, run them in a
thread. It needs root and iproute2's ``ip``: :func:`require` skips the test with the reason,
or fails it under CI, where both must be there.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from typing import NoReturn

import pytest

PREFIX = "jobsvc"
SUBNET = "10.213.13"  # a /24; only the test's namespaces ever hold an address in it
BRIDGE = "br0"
IP_TIMEOUT = 10  # seconds any one `ip` command may take on a busy machine
KILL_WITHIN = 10  # seconds every process of a host has to be gone after SIGKILL


def missing(reason: str) -> NoReturn:
    """Skip the test, or fail it under CI, where root and iproute2 are there."""
    if os.environ.get("CI"):
        pytest.fail(f"{reason}: under CI this is an error (CI runs as root; .ci/run installs ip)")
    pytest.skip(reason)


def require() -> None:
    """Skip (or under CI fail) unless this process may make network namespaces."""
    if os.geteuid() != 0:
        missing("network namespaces need root")
    if shutil.which("ip") is None:
        missing("network namespaces need iproute2's ip (apt-get install iproute2)")
    probe = f"{PREFIX}-{os.getpid()}-probe"
    if probe in _ip("netns", "list").split():  # left by a crashed run with this pid
        _ip("netns", "del", probe)
    try:
        _ip("netns", "add", probe)
    except AssertionError as exc:  # a container without CAP_SYS_ADMIN, say
        missing(f"cannot make a network namespace here: {exc}")
    _ip("netns", "del", probe)


def _ip(*args: str) -> str:
    done = subprocess.run(
        ["ip", *args], capture_output=True, text=True, timeout=IP_TIMEOUT, check=False
    )
    if done.returncode != 0:
        raise AssertionError(f"ip {' '.join(args)}: {done.stderr.strip()}")
    return done.stdout


@dataclass(frozen=True)
class Host:
    """One test host: its namespace, its address, and the name of its cable's hub end."""

    role: str
    namespace: str
    address: str
    cable: str

    def argv(self, *command: str) -> list[str]:
        """``command`` run inside this host (``ip netns exec`` execs it: same pid)."""
        return ["ip", "netns", "exec", self.namespace, *command]


@dataclass
class HostNetwork:
    """A bridge in a hub namespace and the hosts plugged into it; :meth:`remove` undoes it all."""

    tag: str = field(default_factory=lambda: str(os.getpid()))
    hosts: dict[str, Host] = field(default_factory=dict)

    @property
    def prefix(self) -> str:
        return f"{PREFIX}-{self.tag}-"

    @property
    def hub(self) -> str:
        return self.prefix + "hub"

    def create(self) -> None:
        """The hub and its bridge, after removing this tag's leftovers."""
        for name in self._namespaces():
            self._empty(name)
            _ip("netns", "del", name)
        _ip("netns", "add", self.hub)
        _ip("-n", self.hub, "link", "add", BRIDGE, "type", "bridge")
        _ip("-n", self.hub, "link", "set", BRIDGE, "up")

    def add_host(self, role: str, last_octet: int) -> Host:
        """A namespace with loopback up and ``SUBNET.last_octet/24`` on a veth to the bridge."""
        host = Host(role, self.prefix + role, f"{SUBNET}.{last_octet}", f"to-{role}"[:15])
        _ip("netns", "add", host.namespace)
        self.hosts[role] = host
        # made inside the hub with its peer created straight in the host: never in the root
        _ip("-n", self.hub, "link", "add", host.cable, "type", "veth",
            "peer", "name", "eth0", "netns", host.namespace)  # fmt: skip
        _ip("-n", self.hub, "link", "set", host.cable, "master", BRIDGE, "up")
        _ip("-n", host.namespace, "link", "set", "lo", "up")
        _ip("-n", host.namespace, "addr", "add", f"{host.address}/24", "dev", "eth0")
        _ip("-n", host.namespace, "link", "set", "eth0", "up")
        return host

    def routes(self, host: Host) -> list[str]:
        """``host``'s IPv4 routes and IPv6 default routes: the test subnet's alone, as long
        as nothing but the test's own namespaces is reachable from it."""
        ipv4 = _ip("-n", host.namespace, "route", "show")
        ipv6 = _ip("-n", host.namespace, "-6", "route", "show", "default")
        return (ipv4 + ipv6).splitlines()

    def pids(self, host: Host) -> list[int]:
        """Every process running in ``host``'s namespace."""
        return [int(pid) for pid in _ip("netns", "pids", host.namespace).split()]

    def kill(self, host: Host) -> list[int]:
        """SIGKILL every process of ``host`` (as a power cut would), until none is left."""
        return self._empty(host.namespace)

    def unplug(self, host: Host) -> None:
        """Pull ``host``'s cable: deleting the hub's veth end deletes the host's too."""
        _ip("-n", self.hub, "link", "del", host.cable)

    def remove(self) -> None:
        """Kill every process in every namespace of this tag, then delete the namespaces (and
        with them their veths and the bridge). Safe to call more than once."""
        for name in self._namespaces():
            self._empty(name)
            _ip("netns", "del", name)
        self.hosts.clear()

    def _namespaces(self) -> list[str]:
        listed = _ip("netns", "list").splitlines()
        return [line.split()[0] for line in listed if line.startswith(self.prefix)]

    def _empty(self, namespace: str) -> list[int]:
        killed: list[int] = []
        deadline = time.monotonic() + KILL_WITHIN
        while pids := [int(pid) for pid in _ip("netns", "pids", namespace).split()]:
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    continue
                if pid not in killed:
                    killed.append(pid)
            if time.monotonic() > deadline:
                raise AssertionError(f"processes of {namespace} still running: {pids}")
            time.sleep(0.02)  # the kernel tearing processes down: nothing to wait on
        return killed
