"""The installed units, sysusers file, configuration and man pages, checked with systemd's own
tools: what `meson install` puts down is what a package ships."""
import pathlib
import shutil
import subprocess

import pytest

from conftest import BUILD


@pytest.fixture(scope="module")
def destdir(tmp_path_factory):
    d = tmp_path_factory.mktemp("dest")
    subprocess.run(["meson", "install", "-C", str(BUILD), "--no-rebuild", "--quiet",
                    "--destdir", str(d)], check=True, capture_output=True, timeout=300)
    prefix = subprocess.run(["meson", "introspect", "--buildoptions", str(BUILD)],
                            capture_output=True, text=True, check=True).stdout
    import json
    opts = {o["name"]: o["value"] for o in json.loads(prefix)}
    return d, opts["prefix"]


def units(destdir):
    d, prefix = destdir
    found = sorted(d.glob("**/systemd/system/futured.*"))
    assert [p.name for p in found] == ["futured.service", "futured.socket"], found
    return found


def test_systemd_analyze_verify_prints_nothing(destdir):
    d, prefix = destdir
    unit_paths = [str(p.relative_to(d / prefix.lstrip("/"))) for p in units(destdir)]
    # The units name the installed binaries and man pages: see them at their installed paths
    # in a private mount namespace.
    script = (f"mount --bind {d}{prefix} {prefix} && cd {prefix} && "
              f"systemd-analyze verify {' '.join(unit_paths)}")
    r = subprocess.run(["unshare", "--mount", "sh", "-c", script], capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0 and r.stdout == "" and r.stderr == "", r


def test_systemd_analyze_security_exposure_at_most_1_2(destdir):
    service = units(destdir)[0]
    r = subprocess.run(["systemd-analyze", "security", "--offline=true", "--threshold=12",
                        str(service)], capture_output=True, text=True, timeout=120,
                       cwd=service.parent)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr
    assert "Overall exposure level for futured.service: 1.2" in r.stdout or \
        "Overall exposure level for futured.service: 1.1" in r.stdout, r.stdout[-300:]


def test_service_settings_the_issue_requires(destdir):
    text = units(destdir)[0].read_text()
    for line in ["Type=notify", "ExecReload=/bin/sh -c 'kill -HUP $MAINPID'",
                 "Restart=on-failure", "RestartPreventExitStatus=2", "WatchdogSec=30s",
                 "KillMode=mixed", "OOMPolicy=continue", "User=futured", "UMask=0007",
                 "RuntimeDirectoryPreserve=yes", "StateDirectory=futured",
                 "CapabilityBoundingSet=", "SystemCallFilter=~@privileged"]:
        assert line in text.splitlines(), line
    assert "~@resources" not in text.replace("Never ~@resources", "")
    socket = units(destdir)[1].read_text().splitlines()
    assert "SocketGroup=futured" in socket and "SocketMode=0660" in socket


def test_systemd_sysusers_creates_the_user(destdir, tmp_path):
    d, prefix = destdir
    (conf,) = d.glob("**/sysusers.d/futured.conf")
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    r = subprocess.run(["systemd-sysusers", f"--root={root}", str(conf)], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    passwd = (root / "etc" / "passwd").read_text()
    group = (root / "etc" / "group").read_text()
    assert any(l.startswith("futured:") and ":/var/lib/futured:" in l for l in passwd.splitlines())
    assert any(l.startswith("futured:") for l in group.splitlines())


def test_default_config_is_valid_and_every_key_is_there(destdir):
    d, prefix = destdir
    (conf,) = d.glob("**/etc/futured/futured.conf")
    futured = next(d.glob("**/sbin/futured"))
    r = subprocess.run([str(BUILD / "daemon" / "futured"), "--config", str(conf),
                        "--check-config"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    keys = {l.split(" = ")[0] for l in r.stdout.splitlines() if " = " in l}
    text = conf.read_text()
    for k in keys:
        assert f"#{k} =" in text, k
    assert futured.exists()


def test_man_pages_and_completion_are_installed(destdir):
    d, prefix = destdir
    names = {p.name for p in d.glob("**/share/man/man*/*")}
    assert {"futured.8", "futured.conf.5", "futurectl.1"} <= names, names
    comps = {p.name for p in d.glob("**/bash-completion/completions/*")}
    assert comps == {"futured", "futurectl"}
    r = subprocess.run(["bash", "-n", *map(str, d.glob("**/bash-completion/completions/*"))],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert shutil.which("systemd-analyze")


def test_libfutured_exports_only_its_api_and_the_symbols_file_agrees():
    lib = BUILD / "proto" / "libfutured.so"
    r = subprocess.run(["nm", "-D", "--defined-only", str(lib)], capture_output=True, text=True,
                       check=True)
    names = {l.split()[-1] for l in r.stdout.splitlines()}
    assert names, r.stdout
    leaked = {n for n in names if not n.startswith("futured_") and not n.startswith("FUTURED_0.")}
    assert not leaked, leaked
    # Each function with the version node it came in (libfutured.sym): name@node.
    exported = {n.replace("@@", "@") for n in names if n.startswith("futured_")}
    symbols = pathlib.Path(__file__).resolve().parents[2] / "packaging" / "debian" / \
        "libfutured0.symbols"
    listed = {l.split()[0] for l in symbols.read_text().splitlines()[1:]
              if l.strip().startswith("futured_")}
    assert listed == exported, listed ^ exported
    assert "futured_connect@FUTURED_0.1" in listed
    assert "futured_connect_curve@FUTURED_0.2" in listed
