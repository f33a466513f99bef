"""ansible-lint, profile production (ansible/.ansible-lint), finds nothing in ansible/."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.ansible.support import ANSIBLE_DIR

ANSIBLE_LINT = Path(sys.executable).parent / "ansible-lint"


@pytest.mark.timeout(300)
def test_ansible_lint_production_profile_is_clean(tmp_path: Path) -> None:
    if not ANSIBLE_LINT.exists():
        reason = "needs ansible-lint in this venv (the test extra's ansible-lint)"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    env.update(ANSIBLE_HOME=str(tmp_path), NO_COLOR="1")
    result = subprocess.run([str(ANSIBLE_LINT), "--profile", "production", "--strict"],
                            cwd=ANSIBLE_DIR, env=env, capture_output=True, text=True,
                            timeout=280, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Profile 'production' was required, and it passed" in result.stderr + result.stdout
