"""How the check talks to the candidate in the sandbox: the test code runs in the judge's process and calls the
candidate's functions, which live in another process, through proxies. Standard library only (it is imported
inside the sandbox).

Values cross as tagged JSON of plain types (None, bool, int, float, complex, str, bytes, list, tuple, dict,
set, frozenset), never as pickles: what comes back from the candidate is data the judge decodes, not code it
runs, and a subclass of a plain type crosses as that plain type (an `__eq__` that always says True stays
behind). Frames are a 4-byte big-endian length and UTF-8 JSON.

    judge side:  names = CandidateNamespace(conn); exec(test, names); names["check"](names.proxy("add"))
    candidate:   serve(conn, module_globals)
"""

from __future__ import annotations

import base64
import builtins
import json
import socket
import struct
import sys
import traceback

MAX_FRAME = 64 << 20  # bytes of one message; a larger one is refused
MAX_DEPTH = 200  # nesting of one value
_PLAIN = (type(None), bool, str)
# exceptions the check may expect by name (e.g. `except ValueError`); others arrive as RuntimeError
_NOT_RERAISED = (SystemExit, KeyboardInterrupt, GeneratorExit)


class CandidateGone(Exception):
    """The candidate's process closed the channel (it exited or was killed) during an exchange."""


class Untransferable(TypeError):
    """A value that cannot cross between the two processes."""


def encode(value: object, depth: int = 0) -> object:
    if depth > MAX_DEPTH:
        raise Untransferable(f"a value nested deeper than {MAX_DEPTH} levels")
    kind = type(value)
    if kind in _PLAIN or kind is int or kind is float:
        return value if kind is not float or value == value and abs(value) != float("inf") else {"f": repr(value)}
    if type(kind).__module__ == "builtins" and kind.__module__ == "numpy" and hasattr(value, "item"):
        return encode(value.item(), depth)  # numpy scalars (np.int64, np.bool_, ...) as the Python value
    if isinstance(value, int) or (hasattr(value, "__index__") and not isinstance(value, (str, bytes))):
        return int(value.__index__())
    if isinstance(value, float):
        return encode(float(value), depth)
    if isinstance(value, complex):
        return {"c": [encode(value.real, depth), encode(value.imag, depth)]}
    if isinstance(value, str):
        return str.__getitem__(value, slice(None))
    if isinstance(value, (bytes, bytearray)):
        return {"b": base64.b64encode(bytes(value)).decode()}
    for base, tag in ((tuple, "t"), (list, "l"), (frozenset, "fs"), (set, "s")):
        if isinstance(value, base):
            return {tag: [encode(item, depth + 1) for item in base.__iter__(value)]}
    if isinstance(value, dict):
        return {"d": [[encode(k, depth + 1), encode(v, depth + 1)] for k, v in dict.items(value)]}
    raise Untransferable(f"an object of type {kind.__name__}")


_CONTAINERS = {"t": tuple, "l": list, "fs": frozenset, "s": set}


def decode(data: object) -> object:
    if not isinstance(data, dict):
        return data
    if len(data) != 1:
        raise ValueError(f"not an encoded value: {str(data)[:80]}")
    [(tag, body)] = data.items()
    if tag == "f":
        return float(body)
    if tag == "c":
        return complex(decode(body[0]), decode(body[1]))
    if tag == "b":
        return base64.b64decode(body)
    if tag in _CONTAINERS:
        return _CONTAINERS[tag](decode(item) for item in body)
    if tag == "d":
        return {decode(k): decode(v) for k, v in body}
    raise ValueError(f"not an encoded value: {str(data)[:80]}")


def send(conn: socket.socket, message: object) -> None:
    body = json.dumps(message).encode()
    if len(body) > MAX_FRAME:
        raise Untransferable(f"a message of {len(body)} bytes (at most {MAX_FRAME})")
    conn.sendall(struct.pack(">I", len(body)) + body)


def receive(conn: socket.socket) -> object:
    (size,) = struct.unpack(">I", _read_exactly(conn, 4))
    if size > MAX_FRAME:
        raise CandidateGone(f"the candidate sent a message of {size} bytes (at most {MAX_FRAME})")
    try:
        return json.loads(_read_exactly(conn, size))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CandidateGone(f"the candidate sent a malformed message ({err})") from None


def _read_exactly(conn: socket.socket, size: int) -> bytes:
    chunks, left = [], size
    while left:
        chunk = conn.recv(min(left, 1 << 20))
        if not chunk:
            raise CandidateGone("the candidate's process closed the channel")
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


# ---- the judge's side ----


class CandidateNamespace(dict):
    """Globals for the test code: a name the test does not define and that is not a builtin is looked up in the
    candidate's module (a helper from the prompt, e.g. HumanEval's encode_cyclic) and comes back as a proxy
    (callables) or a copy (plain values)."""

    def __init__(self, conn: socket.socket):
        super().__init__(__builtins__=builtins, __name__="__main__")
        self._conn = conn

    def __missing__(self, name: str) -> object:
        if hasattr(builtins, name):
            return getattr(builtins, name)
        reply = self._ask(["get", name])
        if reply[0] == "missing":
            raise KeyError(name)
        return self.proxy(name) if reply[0] == "callable" else decode(reply[1])

    def proxy(self, name: str):
        def call(*args, **kwargs):
            reply = self._ask(["call", name, encode(list(args)), encode(kwargs)])
            if reply[0] == "return":
                return decode(reply[1])
            if reply[0] == "untransferable":
                raise Untransferable(f"{name}() returned {reply[1]}, which cannot leave the candidate's process")
            raise _exception(reply[1], reply[2])

        call.__name__ = call.__qualname__ = name
        return call

    def _ask(self, message: list) -> list:
        try:
            send(self._conn, message)
            reply = receive(self._conn)
        except OSError as err:  # e.g. a broken pipe: the candidate's process is gone
            raise CandidateGone(f"the channel to the candidate broke ({err})") from None
        if not isinstance(reply, list) or not reply or not isinstance(reply[0], str):
            raise CandidateGone(f"the candidate sent a malformed reply: {str(reply)[:80]}")
        return reply


def _exception(name: object, message: object) -> BaseException:
    """The candidate's exception as the check can catch it: a builtin exception type by name, else RuntimeError."""
    kind = getattr(builtins, str(name), None)
    text = str(message)
    if isinstance(kind, type) and issubclass(kind, BaseException) and not issubclass(kind, _NOT_RERAISED):
        try:
            return kind(text)
        except Exception:  # noqa: BLE001 - a builtin whose constructor wants other arguments
            pass
    return RuntimeError(f"{name}: {text}")


# ---- the candidate's side ----


def serve(conn: socket.socket, names: dict) -> None:
    """Answer the judge's lookups and calls until it closes the channel."""
    while True:
        try:
            request = receive(conn)
        except CandidateGone:
            return
        kind, name = request[0], request[1]
        if kind == "get":
            if name not in names:
                reply = ["missing"]
            elif callable(names[name]):
                reply = ["callable"]
            else:
                reply = _value_reply(names[name])
        else:
            reply = _call(names, name, decode(request[2]), decode(request[3]))
        flush_output()  # what the call printed reaches the parent before the judge moves on (and kills us)
        send(conn, reply)


def flush_output() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError, AttributeError):
            continue  # the program closed or replaced the stream; its output is not part of the verdict


def _value_reply(value: object) -> list:
    try:
        return ["return", encode(value)]
    except (Untransferable, RecursionError, ValueError, TypeError) as err:
        return ["untransferable", str(err)]


def _call(names: dict, name: str, args: list, kwargs: dict) -> list:
    function = names.get(name)
    if not callable(function):
        return ["raise", "NameError", f"name {name!r} is not defined in the program"]
    try:
        result = function(*args, **kwargs)
    except (MemoryError, SystemExit):
        raise  # the process ends with its own status (see sandbox_harness._candidate)
    except BaseException as err:  # noqa: BLE001 - the candidate's failure is the check's business
        traceback.print_exc()
        return ["raise", type(err).__name__, str(err)[:4000]]
    reply = _value_reply(result)
    if reply[0] == "untransferable":
        return reply
    try:
        body = json.dumps(reply)
    except (TypeError, ValueError) as err:
        return ["untransferable", str(err)]
    return reply if len(body) <= MAX_FRAME else ["untransferable", f"a value of {len(body)} bytes"]
