"""Loaded by every Python process the tests start (conftest.py puts this folder first on
PYTHONPATH): refuses name lookups and connections to anything but this machine's loopback, so
that no test can reach the network, whatever the machine it runs on can reach. It refuses before
a packet is sent: a test that would download fails with NetworkRefused instead."""

import ipaddress
import socket

LOCAL_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost", ""}


class NetworkRefused(OSError):
    """A test tried to reach beyond this machine."""


def is_local(host):
    if isinstance(host, bytes):
        host = host.decode()
    if host is None or host in LOCAL_NAMES or host == socket.gethostname():
        return True
    try:
        address = ipaddress.ip_address(host.split("%")[0])
    except ValueError:
        return False  # a name that would need a lookup
    return address.is_loopback or address.is_unspecified


def _check(host):
    if not is_local(host):
        raise NetworkRefused(f"the tests reach no network: refused {host!r}")


def _guarded_getaddrinfo(host, *args, **kwargs):
    _check(host)
    return _getaddrinfo(host, *args, **kwargs)


def _guarded_connect(self, address):
    if self.family in (socket.AF_INET, socket.AF_INET6):
        _check(address[0])
    return _connect(self, address)


def _guarded_connect_ex(self, address):
    if self.family in (socket.AF_INET, socket.AF_INET6):
        _check(address[0])
    return _connect_ex(self, address)


def _guarded_lookup(lookup):
    """gethostbyname and its kin: each asks a resolver (the network) about a name or address."""
    def guarded(host, *args, **kwargs):
        _check(host)
        return lookup(host, *args, **kwargs)
    return guarded


_getaddrinfo, _connect, _connect_ex = socket.getaddrinfo, socket.socket.connect, socket.socket.connect_ex
socket.getaddrinfo = _guarded_getaddrinfo
socket.socket.connect = _guarded_connect
socket.socket.connect_ex = _guarded_connect_ex
for _name in ("gethostbyname", "gethostbyname_ex", "gethostbyaddr"):
    setattr(socket, _name, _guarded_lookup(getattr(socket, _name)))
