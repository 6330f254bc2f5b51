"""Builds the native backend's C++ kernel into torch's extension cache: ``python -m vizattn.native build``.

``attend`` never compiles; without this build it uses the tiled backend and says so once
(``vizattn.backends.native``). ``python3 dev.py`` runs this step during set-up.
"""

from __future__ import annotations

import sys

from .backends import native


def main(argv: list[str]) -> int:
    """``build``: compile the kernel (or find it built); the exit status is 1 when it cannot be built."""
    if argv != ["build"]:
        print(f"usage: {native.BUILD_COMMAND}", file=sys.stderr)
        return 2
    if native.unavailable() is None:
        print(f"vizattn: the native attention kernel is built ({native.build_directory()})")
        return 0
    print(f"vizattn: compiling the native attention kernel into {native.build_directory()} (about a minute, once)")
    why = native.build()
    print(f"vizattn: {why}" if why else "vizattn: native kernel built")
    return 1 if why else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
