"""The compiled extension is importable and built optimised."""

import saverkit
import saverkit._core as core


def test_extension_imports_and_reports_version():
    assert core.__version__ == saverkit.__version__
