"""The package installs with Debian's own tools (pip with Debian's setuptools, no package index,
no build isolation) into a temporary --target, and imports from there with its type marker."""
import os
import subprocess
import sys

from conftest import TOP


def test_pip_install_into_a_target_and_import(tmp_path):
    target = tmp_path / "site"
    src = tmp_path / "src"
    # A copy of the source, so that the build's egg-info and build/ never land in the tree.
    subprocess.run(["cp", "-r", str(TOP / "python"), str(src)], check=True)
    p = subprocess.run(["/usr/bin/python3", "-m", "pip", "install", "--no-build-isolation",
                        "--no-index", "--no-deps", "--no-cache-dir", "--disable-pip-version-check",
                        "--target", str(target), str(src)],
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stdout + p.stderr
    assert (target / "futured" / "py.typed").exists()
    assert list(target.glob("futured-0.1.0.dist-info"))
    env = dict(os.environ, PYTHONPATH=str(target))
    code = ("import futured, futured.aio, futured.kinds, importlib.metadata as m; "
            "print(futured.__file__); print(m.version('futured')); "
            "print(issubclass(futured.Executor, __import__('concurrent.futures').futures.Executor))")
    p = subprocess.run(["/usr/bin/python3", "-c", code], capture_output=True, text=True,
                       timeout=60, env=env, cwd=str(tmp_path))
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    assert lines[0] == str(target / "futured" / "__init__.py")
    assert lines[1:] == ["0.1.0", "True"]
    assert sys.executable  # the tests themselves run from the source tree
