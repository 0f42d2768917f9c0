"""Run model-written Python in a separate, locked-down process and return its `result`.

The code is hostile by assumption. The process boundary and the kernel are the real wall;
inside the child, a name layer and an audit hook are a second one, so that a trick past one
layer still meets the next. From the outside in:

* the process: a fresh interpreter (`python -I -S`) in its own session, with an empty
  environment, a new empty temporary directory as its working directory (deleted
  afterwards) and, where the system allows it, its own network namespace (no network);
* resource limits: CPU time, address space, no file writes, few descriptors, no core
  files, and (after dropping root to `nobody`) no new processes; a wall-clock timeout that
  kills the whole process group;
* kernel confinement, seccomp-bpf (the filter is built by libseccomp through `pyseccomp`):
  after set-up and before the code runs, the child keeps only the system calls a running
  interpreter needs to compute (memory, reading and writing the descriptors it already
  holds, clocks, random bytes, exiting); every other call fails with EPERM, whatever
  Python-level route reached it: no file is opened, stat'ed or listed, no link read, no
  working directory or parent pid asked, no socket, pipe, memfd, process or signal made.
  Where libseccomp or the kernel facility is missing the sandbox runs on the other layers
  and says so in a debug log (logger `lmdsl.sandbox`);
* the name layer, in the child: only allow-listed (standard-library) modules can be
  imported, as copies without private attributes; builtins without `open`, `eval`, `exec`,
  `compile`, `input`, `globals`, `vars`...; attribute names that reach interpreter
  internals (`__subclasses__`, `__globals__`, `__dict__`, `__getstate__`, frames...) are
  refused wherever a name is spelled: in the source (attributes, names, parameters,
  keyword arguments, class patterns, imports) and at run time by getattr() & co.,
  operator.attrgetter/methodcaller, str.format/format_map and string.Formatter fields, the
  `__match_args__` of class patterns (read once, checked and frozen when the pattern runs),
  functools.update_wrapper, and `typing`'s evaluation of type hints (never in another
  module's namespace, never with the real builtins);
* an audit hook (`sys.addaudithook`) installed just before the code runs that refuses
  every event but a few harmless ones: no file opens, directory listings, imports of
  new modules, sockets, processes, `ctypes`, signals to other processes, frames,
  run-time compilation (except what namedtuple and typing compile), rlimit changes...;
  and the few `os`/`signal` calls that raise no audit event but reach other processes
  (`pidfd_send_signal`, `setpgid`, `mknod`...) and the import system's back doors
  (`_imp.create_dynamic`...) are removed from the child's modules.

The child talks to the parent over its stdout pipe, one JSON line per message. The first
line is written by the runner before the code runs ("ready", or why set-up failed), so the
code cannot forge it. The one line after "ready" is the reply; the code could forge that
one (it runs in the same process), so the parent trusts it no more than the code itself:
it checks the schema and sizes, applies the output limit itself, and reports anything else
(a second message, a malformed one, a "setup" message) as `SandboxViolation`. A child that
dies of a signal no limit explains is `SandboxCrash`. Nothing the child writes becomes
`SandboxInputError`, which is only for the caller's own inputs and limits.

Files are not available at all, not even in the temporary directory: the code computes
from its inputs. Data crosses the process boundary only as JSON, never pickle. Modules that
are introspection by design (`inspect`, `gc`, `sys`, `types`, `ctypes`, `importlib`...) are
outside what the name layer polices: allowing one leaves the audit hook and the kernel as
the walls. Linux only.

The package: `limits` (what a run may use, what it returns), `parent` (starting the child
and collecting what it says), `protocol` (checking and interpreting the child's messages),
`confinement` (the parent's half of the kernel layer: the seccomp program and the network
namespace) and `child` (the child's whole program, run as its own file with
`python -I -S child.py`; standard library only).
"""

from __future__ import annotations

from lmdsl.sandbox.limits import DEFAULT_ALLOWED_MODULES, SandboxLimits, SandboxResult
from lmdsl.sandbox.parent import run_code

__all__ = ["DEFAULT_ALLOWED_MODULES", "SandboxLimits", "SandboxResult", "run_code"]
