"""libfutured as a user gets it: installed with its header and pkg-config file, an example
program built against it with pkg-config alone, and run against a real futured."""
import os
import subprocess

from conftest import BUILD, TOP


def test_installed_library_builds_and_runs_the_example(daemon, tmp_path):
    dest = tmp_path / "root"
    subprocess.run(["meson", "install", "-C", str(BUILD), "--destdir", str(dest),
                    "--no-rebuild", "--quiet"], check=True, capture_output=True, timeout=120)
    pcdirs = [str(p.parent) for p in dest.rglob("futured.pc")]
    assert pcdirs, "no futured.pc installed"
    headers = list(dest.rglob("futured/client.h"))
    assert headers, "futured/client.h not installed"
    prefix_include = str(headers[0].parent.parent)
    libdir = str(next(dest.rglob("libfutured.so")).parent)
    env = dict(os.environ, PKG_CONFIG_PATH=":".join(pcdirs),
               PKG_CONFIG_SYSROOT_DIR=str(dest))
    flags = subprocess.run(["pkg-config", "--cflags", "--libs", "futured", "msgpack"], env=env,
                           check=True, capture_output=True, text=True).stdout.split()
    assert "-lfutured" in flags
    exe = tmp_path / "primes"
    # A sanitized build's library needs its runtime first in the program that loads it.
    ldd = subprocess.run(["ldd", str(next(dest.rglob("libfutured.so")))], capture_output=True,
                         text=True).stdout
    sanitize = ["-fsanitize=address,undefined"] if "libasan" in ldd else []
    subprocess.run(["cc", *sanitize, "-Wall", "-Werror", str(TOP / "docs" / "examples" / "primes.c"),
                    "-I" + prefix_include, *flags, "-L" + libdir, "-o", str(exe)], env=env,
                   check=True, timeout=120)
    run_env = dict(os.environ, LD_LIBRARY_PATH=libdir, FUTURED_ENDPOINT=daemon.endpoint)
    p = subprocess.run([str(exe), "9999999999999917", "91", "2"], env=run_env,
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    assert len(lines) == 3
    # Completion order: the big prime takes longest, so it comes last.
    assert '"n"=>9999999999999917, "is_prime"=>true' in lines[-1]
    assert sorted(line.split(":")[1].split(",")[:3][0] for line in lines[:2]) == [
        ' {"n"=>2', ' {"n"=>91']
    assert any('"n"=>91, "is_prime"=>false, "smallest_factor"=>7' in line for line in lines)
    p = subprocess.run([str(exe), "abc"], env=run_env, capture_output=True, text=True, timeout=60)
    assert p.returncode == 2 and "abc" in p.stderr
