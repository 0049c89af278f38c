"""Stand-in for the pip bootstrap script ansible-test downloads for `--venv`, from a site this machine cannot reach.

ansible-test runs it with the new virtual environment's interpreter and the packages to install as arguments
(GET_PIP points at it). It bootstraps the interpreter's bundled pip with ensurepip, then lets that pip install the
requested packages from the package index the machine is configured for.
"""

from __future__ import annotations

import ensurepip
import os
import subprocess
import sys

CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"


def main() -> None:
    ensurepip.bootstrap(upgrade=True)
    # get-pip's own flags, which pip install does not know.
    packages = [arg for arg in sys.argv[1:] if arg not in ("--no-setuptools", "--no-wheel")]
    command = [sys.executable, "-m", "pip", "install", "--disable-pip-version-check"]
    if os.path.exists(CA_BUNDLE):
        command += ["--cert", CA_BUNDLE]
    subprocess.check_call(command + packages)


if __name__ == "__main__":
    main()
