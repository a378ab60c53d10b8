"""tests/e2e/test_install.py on a real kubelet node: the chart installed with Helm, the operator in its
image, CPU workers in the worker image (see conftest.py). Every test of that module, in its order (the
last one reads the operator's log for what all the others did), over this folder's fixtures."""

from __future__ import annotations

import pytest

from tests.e2e import test_install as e2e

pytestmark = [pytest.mark.images, pytest.mark.cluster, pytest.mark.slow]

globals().update({name: test for name, test in vars(e2e).items() if name.startswith("test_") and callable(test)})
