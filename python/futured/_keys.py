"""CurveZMQ keys for tcp:// endpoints: the key files of `futurectl keygen` (docs/SECURITY.md).

A key file has lines `public KEY` and `secret KEY` (40 Z85 characters each) and `#` comments;
PREFIX.key holds both and must be readable by its owner only, PREFIX.pub the public one. The
server key may also be given as the 40 characters themselves."""

from __future__ import annotations

import os
import stat
from typing import Dict, Optional, Tuple

import zmq

__all__ = ["CurveKeys", "load_keys", "secure"]

_Z85 = set("0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.-:+=^!/*?&<>()[]{}@%$#")

# (server public, client public, client secret), each 40 Z85 characters as bytes.
CurveKeys = Tuple[bytes, bytes, bytes]


def _is_key(s: str) -> bool:
    return len(s) == 40 and set(s) <= _Z85


def _read(path: str) -> Dict[str, str]:
    keys: Dict[str, str] = {}
    with open(path, encoding="ascii") as f:
        mode = os.fstat(f.fileno()).st_mode
        for n, line in enumerate(f, 1):
            words = line.split()
            if not words or words[0].startswith("#"):
                continue
            name = "public"
            if words[0] in ("public", "secret") and len(words) > 1:
                name = words.pop(0)
            if not _is_key(words[0]):
                raise ValueError(f"{path}:{n}: expected 'public KEY' or 'secret KEY' (Z85)")
            keys[name] = words[0]
    if "secret" in keys and stat.S_IMODE(mode) & 0o077:
        raise PermissionError(f"{path} holds a secret key and is readable by others (chmod 600)")
    return keys


def load_keys(server_key: Optional[str], client_key: Optional[str]) -> Optional[CurveKeys]:
    """The keys to use: the arguments, else $FUTURED_SERVER_KEY and $FUTURED_CLIENT_KEY; None
    when neither is set. `server_key` is a key or a key file, `client_key` a key file. Raises
    ValueError (one without the other, a malformed file), PermissionError or OSError."""
    server_key = server_key or os.environ.get("FUTURED_SERVER_KEY") or None
    client_key = client_key or os.environ.get("FUTURED_CLIENT_KEY") or None
    if server_key is None and client_key is None:
        return None
    if server_key is None or client_key is None:
        raise ValueError("server_key and client_key go together")
    if _is_key(server_key) and not os.path.exists(server_key):
        server = server_key
    else:
        server = _read(server_key).get("public", "")
    pair = _read(client_key)
    if not server or "public" not in pair or "secret" not in pair:
        raise ValueError("a key file lacks its 'public' or 'secret' line")
    return server.encode(), pair["public"].encode(), pair["secret"].encode()


def secure(sock: zmq.Socket, endpoint: str, keys: Optional[CurveKeys]) -> None:
    """Makes `sock` a CURVE client before it connects to `endpoint`, when that is a network
    endpoint (not ipc:// or inproc://) and there are keys."""
    if keys is None or endpoint.startswith(("ipc://", "inproc://")):
        return
    sock.curve_serverkey, sock.curve_publickey, sock.curve_secretkey = keys
