"""scripts/setup.sh shows people what is for them: its output filter drops setuptools' boxed warning about
editable installs and pip's notes about this machine's absent mirrors, and keeps everything else."""

from __future__ import annotations

import subprocess
from pathlib import Path

SETUP = Path(__file__).resolve().parents[1] / "scripts" / "setup.sh"

# what `pip install -e .` printed on a fresh machine (setuptools 80), between two lines that must stay
BUILD_ENV = "/tmp/pip-build-env-80s50hlj/overlay/lib/python3.11/site-packages/setuptools/command"
NOISE = f"""setup: installing Python dependencies
  {BUILD_ENV}/editable_wheel.py:354: BuildBackendWarning: Editable installation.
  !!

          ********************************************************************************
          Please be careful with folders in your working directory with the same
          name as your package as they may take precedence during imports.
          ********************************************************************************

  !!
    with strategy, WheelFile(wheel_path, "w") as wheel_obj:
WARNING: Location 'file:///opt/pypi-more/simple/typing-extensions/' is ignored: it is neither a file nor a directory.
ERROR: Could not find a version that satisfies the requirement nothing-such
setup: ok
"""


def test_the_filter_drops_the_noise_and_keeps_the_rest(tmp_path):
    (tmp_path / "out.txt").write_text(NOISE)
    script = f'source <(sed -n "/^quiet()/,/^}}/p" {SETUP}); quiet cat {tmp_path / "out.txt"}'
    done = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["setup: installing Python dependencies",
                                        "ERROR: Could not find a version that satisfies the requirement nothing-such",
                                        "setup: ok"]


def test_apt_output_goes_to_a_log_shown_only_on_failure():
    text = SETUP.read_text()
    install = text[text.index("if [ ${#need[@]} -gt 0 ]"):text.index("quiet()")]
    assert '>"$apt_log" 2>&1' in install and 'tail -30 "$apt_log" >&2' in install and "exit 1" in install
