"""futurectl flags: the classic flags2 downloader through a real futured against the real test
HTTP server (tests/testhttp), in each of its modes."""
import json
import re
import signal
import subprocess
import time

from conftest import FUTURECTL, TOP
from httpserver import FLAGS, start_testhttp, testhttp  # noqa: F401 (fixtures)

COUNTRY_CODES = (TOP / "tests" / "data" / "country_codes.txt").read_text().split()
DEFAULT_20 = sorted("CN IN US ID BR PK NG BD RU JP MX PH VN ET EG DE IR TR CD FR".split())


def flags(daemon, *args, timeout=120, check=None):
    p = subprocess.run([str(FUTURECTL), "--connect", daemon.endpoint, "flags", *args],
                       capture_output=True, text=True, timeout=timeout)
    if check is not None:
        assert p.returncode == check, (p.returncode, p.stdout, p.stderr)
    return p


def tally(stdout):
    """The final report as {downloaded, not_found, errors}."""
    got = {"downloaded": 0, "not found": 0, "errors": 0}
    for m in re.finditer(r"^ *(\d+) (flags? downloaded|not found|errors?)\.$", stdout, re.M):
        key = "downloaded" if "downloaded" in m[2] else "not found" if "not" in m[2] else "errors"
        got[key] = int(m[1])
    return got


def test_every_code_static(daemon, testhttp, tmp_path):
    dest = tmp_path / "out"
    p = flags(daemon, "-e", "--base-url", testhttp.url + "/flags", "--dest", str(dest), check=0)
    lines = p.stdout.splitlines()
    assert lines[0] == f"CUSTOM site: {testhttp.url}/flags"
    assert lines[1] == "Searching for 676 flags: from AA to ZZ"
    assert lines[2] == "30 concurrent connections will be used."
    assert lines[3:] == ["-" * 20, "194 flags downloaded.", "482 not found.", lines[-1]]
    assert re.fullmatch(r"Elapsed time: \d+\.\d\ds", lines[-1])
    saved = sorted(f.name for f in dest.iterdir())
    assert saved == sorted(f"{cc}.gif" for cc in COUNTRY_CODES)
    for cc in COUNTRY_CODES:
        lower = cc.lower()
        assert (dest / f"{cc}.gif").read_bytes() == (FLAGS / lower / f"{lower}.gif").read_bytes()


def test_a_second_run_replaces_the_files_and_leaves_nothing_else(daemon, testhttp, tmp_path):
    dest = tmp_path / "out"
    dest.mkdir()
    (dest / "BR.gif").write_bytes(b"an older, different file")
    (dest / "keep.txt").write_text("not ours")
    for _ in range(2):
        flags(daemon, "BR", "AR", "ZZ", "--base-url", testhttp.url + "/flags", "--dest", str(dest),
              check=0)
        assert sorted(f.name for f in dest.iterdir()) == ["AR.gif", "BR.gif", "keep.txt"]
        for cc in ("br", "ar"):
            assert (dest / f"{cc.upper()}.gif").read_bytes() == (FLAGS / cc / f"{cc}.gif").read_bytes()
    assert (dest / "keep.txt").read_text() == "not ours"


def test_error_server_tally_matches_its_seed(daemon, start_testhttp, tmp_path):
    server = start_testhttp("--mode", "error", "--error-rate", "0.3", "--seed", "42")
    expected = {cc: server.explain(f"/flags/{cc.lower()}/{cc.lower()}.gif") for cc in COUNTRY_CODES}
    n_errors = sum(1 for s in expected.values() if s == "418")
    assert 0 < n_errors < len(COUNTRY_CODES)
    p = flags(daemon, "-a", "-v", "--base-url", server.url + "/flags", "--dest",
              str(tmp_path / "out"))
    assert p.returncode == 1  # some downloads failed
    assert tally(p.stdout) == {"downloaded": 194 - n_errors, "not found": 0, "errors": n_errors}
    for cc, status in expected.items():
        if status == "418":
            assert f"{cc} error: HTTP error 418 - I'm a Teapot\n" in p.stdout
            assert not (tmp_path / "out" / f"{cc}.gif").exists()
        else:
            assert f"{cc} OK\n" in p.stdout


def test_verbose_lines_and_not_found(daemon, testhttp, tmp_path):
    p = flags(daemon, "-v", "br", "XX", "--base-url", testhttp.url + "/flags", "--dest",
              str(tmp_path), check=0)
    assert "Searching for 2 flags: BR, XX\n" in p.stdout
    assert "2 concurrent connections will be used.\n" in p.stdout
    assert "BR OK\n" in p.stdout
    assert f"XX not found: {testhttp.url}/flags/xx/xx.gif\n" in p.stdout
    assert tally(p.stdout) == {"downloaded": 1, "not found": 1, "errors": 0}


def test_code_selection_rules(daemon, testhttp, tmp_path):
    base = ["--base-url", testhttp.url + "/flags", "--dest", str(tmp_path), "--json"]
    out = json.loads(flags(daemon, *base, check=0).stdout)
    assert [f["cc"] for f in out["flags"]] == DEFAULT_20
    out = json.loads(flags(daemon, "b", "BR", "ab", *base, check=0).stdout)
    assert [f["cc"] for f in out["flags"]] == ["AB"] + [f"B{c}" for c in map(chr, range(65, 91))]
    out = json.loads(flags(daemon, "-a", "BR", "ZZ", "-l", "5", *base, check=0).stdout)
    assert [f["cc"] for f in out["flags"]] == COUNTRY_CODES[:5]
    out = json.loads(flags(daemon, "-e", "-a", "-l", "3", "-m", "2", *base, check=0).stdout)
    assert [f["cc"] for f in out["flags"]] == ["AA", "AB", "AC"]
    assert out["concurrency"] == 2
    out = json.loads(flags(daemon, "-e", "-m", "5000", *base, "-l", "700", check=0).stdout)
    assert out["requested"] == 676 and out["concurrency"] == 676
    assert out["downloaded"] == 194 and out["not_found"] == 482 and out["errors"] == 0


def test_one_connection_and_labels(daemon, testhttp, tmp_path):
    p = flags(daemon, "-m", "1", "BR", "--base-url", testhttp.url + "/flags", "--dest",
              str(tmp_path), check=0)
    assert "1 connection will be used.\n" in p.stdout and "Searching for 1 flag: BR\n" in p.stdout


def test_usage_errors(daemon, tmp_path):
    for args in (["ABC"], ["1"], ["B1"], ["-l", "0"], ["-m", "x"], ["-s", "nowhere"], ["--bogus"]):
        p = flags(daemon, *args, "--dest", str(tmp_path))
        assert p.returncode == 2, (args, p.stderr)
        assert p.stderr.startswith("futurectl: ") and "Usage: futurectl flags" in p.stderr, args
        assert p.stdout == ""
    p = flags(daemon, "ABC")
    assert "must be A to Z or AA to ZZ" in p.stderr


def test_server_labels_are_case_insensitive(daemon, tmp_path):
    # Nothing needs to answer: the report's first line names the site before any download.
    for label, url in (("local", "http://localhost:8000/flags"),
                       ("Delay", "http://localhost:8001/flags"),
                       ("ERROR", "http://localhost:8002/flags"),
                       ("remote", "https://www.fluentpython.com/data/flags")):
        p = subprocess.Popen([str(FUTURECTL), "--connect", daemon.endpoint, "flags", "-s", label,
                              "-l", "1", "--dest", str(tmp_path)], stdout=subprocess.PIPE,
                             text=True)
        assert p.stdout.readline() == f"{label.upper()} site: {url}\n"
        p.send_signal(signal.SIGINT)
        p.communicate(timeout=30)


def test_ctrl_c_cancels_outstanding_and_reports(daemon, start_testhttp, tmp_path):
    server = start_testhttp("--mode", "delay", "--delay", "0.2")
    p = subprocess.Popen([str(FUTURECTL), "--connect", daemon.endpoint, "flags", "-e", "-m", "1",
                          "-v", "--base-url", server.url + "/flags", "--dest", str(tmp_path)],
                         stdout=subprocess.PIPE, text=True)
    time.sleep(1.5)
    p.send_signal(signal.SIGINT)
    out, _ = p.communicate(timeout=30)
    assert p.returncode == 1
    assert "Interrupted" in out
    t = tally(out)
    assert 0 < t["downloaded"] + t["not found"] < 676
    stats = daemon.c.rq("stats")["stats"]
    assert stats["pending"] == 0 and stats["running"] == 0
    assert stats["cancelled"] >= 600


def test_concurrent_runs_each_get_their_own_tally(daemon, start_testhttp, tmp_path):
    server = start_testhttp("--mode", "delay", "--delay", "0.05")
    runs = []
    for i, args in enumerate((["-a", "-m", "3"], ["-e", "-l", "100", "-m", "7"], ["b", "-m", "1"])):
        runs.append(subprocess.Popen(
            [str(FUTURECTL), "--connect", daemon.endpoint, "--json", "flags", *args,
             "--base-url", server.url + "/flags", "--dest", str(tmp_path / f"run{i}")],
            stdout=subprocess.PIPE, text=True))
    results = [json.loads(r.communicate(timeout=120)[0]) for r in runs]
    assert [r["concurrency"] for r in results] == [3, 7, 1]
    a_codes = set(COUNTRY_CODES)
    every100 = [f"{a}{b}" for a in map(chr, range(65, 91)) for b in map(chr, range(65, 91))][:100]
    b_codes = [f"B{c}" for c in map(chr, range(65, 91))]
    for r, codes in zip(results, (sorted(a_codes), every100, b_codes)):
        assert [f["cc"] for f in r["flags"]] == codes
        assert r["downloaded"] == len(a_codes & set(codes))
        assert r["not_found"] == len(set(codes) - a_codes) and r["errors"] == 0


def test_progress_bar_on_a_terminal_only(daemon, testhttp, tmp_path):
    import os
    import pty
    master, slave = pty.openpty()
    p = subprocess.Popen([str(FUTURECTL), "--connect", daemon.endpoint, "flags", "-e",
                          "--base-url", testhttp.url + "/flags", "--dest", str(tmp_path)],
                         stdout=subprocess.PIPE, stderr=slave, text=True)
    os.close(slave)
    out, _ = p.communicate(timeout=60)
    bar = b""
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:
            break
        if not chunk:
            break
        bar += chunk
    os.close(master)
    assert p.returncode == 0
    final = bar.decode().replace("\r\n", "\n").split("\r")[-1]
    assert re.match(r"100%\|█{25}\| 676/676 \[\d\d:\d\d<00:00, \d+\.\d\dit/s\]", final), final
    assert "%|" not in out  # stdout keeps the report only
    # Not a terminal, or -v: no bar at all.
    p = flags(daemon, "-l", "3", "--base-url", testhttp.url + "/flags", "--dest", str(tmp_path),
              check=0)
    assert "%|" not in p.stderr
