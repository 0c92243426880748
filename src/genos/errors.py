"""Every error GenOS raises, under one root.

Failures from outside (runc, nft, SQL, HTTP, the file system) are translated at
the boundary into the most specific class here, ``raise ... from exc``; above
the driver layer nobody sees an ``OSError``. Each error says whose fault it is
(``fault``) and carries a stable machine-readable ``code``; the CLI turns it
into a one-line message and an exit code, the API into a 4xx/5xx JSON body.

::

    GenOSError                  fault    code
    ├── InputError              user     bad_input     bad text, file or value
    │   ├── PromptError         user     bad_prompt    empty, too long, control chars, not UTF-8
    │   └── SpecError           user     invalid_spec  an EnvironmentSpec that does not validate
    ├── NotFoundError           user     not_found     no such environment, layer, volume, app
    ├── StateError              user     wrong_state   verb not allowed in the current state
    ├── CapabilityError         host     unsupported   this host cannot (runtime, CRIU, KVM)
    ├── CatalogError            host     catalog       Debian's package index missing/unreadable
    │   └── IndexFetchError     outside  index_fetch   the archive unreachable or its data bad
    ├── ExternalError           outside  external      a host tool failed (runc, nft, mmdebstrap)
    │   └── ClusterUnavailableError outside cluster_unavailable  etcd unreachable or without quorum
    ├── ClosedError             genos    closed        used after aclose()
    ├── ConflictError           user     conflict      a request id reused with a different spec
    │   └── LeaseHeldError      user     lease_held    another has the keyboard and mouse
    ├── QuotaError              user     quota         over a per-user quota (count, cpus, memory)
    ├── CapacityError           host     capacity      more than this host could ever give
    ├── WaitTimeoutError        outside  timeout       a wait for a state ran out of time
    ├── RegistryError           outside  registry      the registry database failed
    ├── ProtocolError           outside  protocol      a stream peer broke RFB (malformed, too big)
    ├── StreamClosedError       outside  stream_closed a stream peer went away mid-conversation
    ├── TokenError              user     bad_token     a gateway token expired, forged, revoked, ...
    └── RemoteError             outside  remote        the GenOS server answered with an error
        └── RemoteInputError    user     remote_input  ... because of the input (also an InputError)

``fault``: ``user`` (fix your input), ``host`` (this machine lacks something),
``outside`` (something beyond GenOS broke; retrying may help), ``genos`` (a bug
or misuse of a closed object).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar, Literal

Fault = Literal["user", "host", "outside", "genos"]


class GenOSError(Exception):
    """Root of every GenOS error."""

    code: ClassVar[str] = "genos_error"
    fault: ClassVar[Fault] = "genos"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class InputError(GenOSError):
    """Input from a user (text, file, value) that GenOS cannot accept."""

    code = "bad_input"
    fault: ClassVar[Fault] = "user"


class PromptError(InputError):
    """A composer prompt that is empty, too long, not text, or has control characters."""

    code = "bad_prompt"


class SpecError(InputError):
    """An EnvironmentSpec that does not validate; ``problems`` lists ``(field, reason)``."""

    code = "invalid_spec"

    def __init__(self, message: str, problems: Sequence[tuple[str, str]] = ()) -> None:
        super().__init__(message)
        self.problems = list(problems)


class NotFoundError(GenOSError):
    """The named thing (environment, layer, volume, app) does not exist."""

    code = "not_found"
    fault: ClassVar[Fault] = "user"

    def __init__(self, kind: str, name: str) -> None:
        super().__init__(f"no {kind} named {name!r}")
        self.kind = kind
        self.name = name


class StateError(GenOSError):
    """A verb was called in a state that does not allow it."""

    code = "wrong_state"
    fault: ClassVar[Fault] = "user"

    def __init__(self, current: str, required: Sequence[str], action: str = "") -> None:
        what = f"cannot {action}: " if action else ""
        super().__init__(f"{what}state is {current}, needs {' or '.join(required)}")
        self.current = current
        self.required = tuple(required)
        self.action = action


class CapabilityError(GenOSError):
    """This host cannot do what was asked (a runtime, CRIU, KVM, a kernel feature)."""

    code = "unsupported"
    fault: ClassVar[Fault] = "host"


class CatalogError(GenOSError):
    """Debian's package index is not available to the knowledge base."""

    code = "catalog"
    fault: ClassVar[Fault] = "host"


class IndexFetchError(CatalogError):
    """Fetching or parsing Debian's package index from the archive failed."""

    code = "index_fetch"
    fault: ClassVar[Fault] = "outside"


class ExternalError(GenOSError):
    """A host tool or service failed; ``detail`` keeps its own words."""

    code = "external"
    fault: ClassVar[Fault] = "outside"

    def __init__(self, message: str, detail: str = "") -> None:
        super().__init__(message)
        self.detail = detail


class ClusterUnavailableError(ExternalError):
    """etcd cannot be reached or has lost its quorum: nothing can be agreed on now."""

    code = "cluster_unavailable"


class ClosedError(GenOSError):
    """An object was used after it was closed."""

    code = "closed"
    fault: ClassVar[Fault] = "genos"


class ConflictError(GenOSError):
    """A request id was reused for a different request (same owner, other spec)."""

    code = "conflict"
    fault: ClassVar[Fault] = "user"


class LeaseHeldError(ConflictError):
    """Someone else holds an environment's input lease; ``holder`` says who (``kind``, ``name``)."""

    code = "lease_held"

    def __init__(self, message: str, holder: dict[str, str]) -> None:
        super().__init__(message)
        self.holder = holder


class QuotaError(GenOSError):
    """A request would take its owner over a quota; ``limit`` names which one."""

    code = "quota"
    fault: ClassVar[Fault] = "user"

    def __init__(self, message: str, limit: str, allowed: float, requested: float) -> None:
        super().__init__(message)
        self.limit = limit
        self.allowed = allowed
        self.requested = requested


class CapacityError(GenOSError):
    """A request needs more than this host could give even when idle."""

    code = "capacity"
    fault: ClassVar[Fault] = "host"


class WaitTimeoutError(GenOSError):
    """Waiting for an environment to reach a state ran out of time."""

    code = "timeout"
    fault: ClassVar[Fault] = "outside"


class RegistryError(GenOSError):
    """The registry database failed (unreachable, locked, corrupt)."""

    code = "registry"
    fault: ClassVar[Fault] = "outside"


class ProtocolError(GenOSError):
    """A peer of the streaming gateway broke the protocol; ``side`` says which peer.

    ``side`` is ``client`` (the viewer), ``environment`` (the display server)
    or ``gateway`` (a limit of ours); ``reason`` is the short human reason that
    is logged and, where the transport allows, sent with the close.
    """

    code = "protocol"
    fault: ClassVar[Fault] = "outside"

    def __init__(self, side: str, reason: str) -> None:
        super().__init__(f"{side}: {reason}")
        self.side = side
        self.reason = reason


class StreamClosedError(GenOSError):
    """A byte stream ended (EOF, reset, closed socket) before a read was satisfied."""

    code = "stream_closed"
    fault: ClassVar[Fault] = "outside"


class TokenError(GenOSError):
    """A gateway token was refused; ``reason`` is one stable word saying why.

    Reasons: ``malformed``, ``forged`` (bad MAC), ``expired``, ``revoked``,
    ``wrong_environment``.
    """

    code = "bad_token"
    fault: ClassVar[Fault] = "user"

    def __init__(self, reason: str, message: str = "") -> None:
        super().__init__(message or f"token refused: {reason}")
        self.reason = reason


class RemoteError(GenOSError):
    """The GenOS server answered a client's call with an error (``status``, ``remote_code``)."""

    code = "remote"
    fault: ClassVar[Fault] = "outside"

    def __init__(self, status: int, remote_code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.remote_code = remote_code


class RemoteInputError(RemoteError, InputError):
    """The server refused the client's input (400, 413, 422)."""

    code = "remote_input"
    fault: ClassVar[Fault] = "user"
