"""Imported by Python at the start of every process whose PYTHONPATH holds this folder (tests/conftest.py
puts it there): the children of the test run are offline too."""

import os
import sys

if os.environ.get("QMU_TEST_OFFLINE") == "1":
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    try:
        from netguard import install
    finally:
        sys.path.pop(0)
    install()
