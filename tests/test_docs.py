"""The README's op list is the op table's (tools/update_readme_ops.py)."""
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_readme_op_list_matches_the_table():
    r = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "update_readme_ops.py"),
                        "--check"], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stdout + r.stderr
