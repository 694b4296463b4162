"""Shared pytest setup.

The custom modules in ``library/`` import their helpers as
``ansible.module_utils.<name>``, which is how Ansible ships them to a host.
Ansible resolves that name through the ``module_utils`` path in ansible.cfg
only when it builds a module payload, so for the unit tests we append the
repository's ``module_utils/`` to the ``ansible.module_utils`` package path and
put ``library/`` on ``sys.path``. Nothing is faked: the same files are imported.
"""

import sys
from pathlib import Path

import ansible.module_utils

REPO = Path(__file__).resolve().parent.parent

if str(REPO / "module_utils") not in ansible.module_utils.__path__:
    ansible.module_utils.__path__.append(str(REPO / "module_utils"))
if str(REPO / "library") not in sys.path:
    sys.path.insert(0, str(REPO / "library"))
