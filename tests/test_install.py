"""install.sh and mako-zero.service, tested by running the real script into a root under tmp_path.

The venv is made with MAKO_VENV_SYSTEM_SITE=1 so it sees this interpreter's requests and PyYAML and pip
is skipped; one opt-in test (MAKO_TEST_NETWORK_INSTALL=1) does a real pip install from the index.
A stub `systemctl` first on PATH records calls, so a run never touches the host's systemd.
"""

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
INSTALL = REPO / "install.sh"
STATE_SEEDS = ("MISSION.md", "CAPABILITIES.md", "STATE.md", "NEXT.md", "PERSONA.md")
CODE_FILES = ("supervisor.py", "tick.py", "scribe.py", "digest.py", "analyse.py", "approve.py", "requirements.txt",
              "config.example.yaml", "mako-zero.service", "install.sh")
RUNTIME_DIRS = ("state", "state/.mako", "state/outbox/blog/drafts", "notes", "workdir", "archive", "pending",
                "logs", "logs/ticks", "logs/scribe")
NOBODY = 65534


def _dep_path():
    """PYTHONPATH that makes requests and yaml importable when this interpreter is itself a venv.

    A --system-site-packages venv made from a venv sees the *base* interpreter's packages, not the outer
    venv's, so there they are passed on explicitly.
    """
    if sys.prefix == sys.base_prefix:
        return None
    import requests
    return os.pathsep.join(sorted({str(Path(requests.__file__).parent.parent), str(Path(yaml.__file__).parent.parent)}))


def install_env(root, unit_dir, stub_dir, **extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAKO_")}
    env.pop("SYSTEMD_DIR", None)
    env.update(MAKO_ROOT=str(root), SYSTEMD_DIR=str(unit_dir), MAKO_VENV_SYSTEM_SITE="1",
               MAKO_PYTHON=sys.executable, PATH=f"{stub_dir}{os.pathsep}{env.get('PATH', '')}")
    if _dep_path():
        env["PYTHONPATH"] = _dep_path()
    env.update({k: v for k, v in extra.items() if v is not None})
    return env


@pytest.fixture
def box(tmp_path):
    """Paths for one install: root, unit dir, and a recording systemctl stub."""
    stub = tmp_path / "bin"
    stub.mkdir()
    calls = tmp_path / "systemctl.calls"
    (stub / "systemctl").write_text(f'#!/bin/sh\necho "$@" >> "{calls}"\n')
    (stub / "systemctl").chmod(0o755)
    return {"root": tmp_path / "root", "units": tmp_path / "units", "stub": stub, "calls": calls}


def run_install(box, script=INSTALL, check=True, **extra):
    env = install_env(box["root"], box["units"], box["stub"], **extra)
    r = subprocess.run(["bash", str(script)], env=env, cwd=str(box["root"].parent), capture_output=True,
                       text=True, timeout=600)
    if check:
        assert r.returncode == 0, f"install.sh failed rc={r.returncode}\n{r.stdout}\n{r.stderr}"
    return r


def unit_directives(text):
    """{(section, key): value} of a unit file, comments skipped."""
    out, section = {}, None
    for line in text.splitlines():
        s = line.strip()
        if not s or s[0] in "#;":
            continue
        if s.startswith("["):
            section = s.strip("[]")
            continue
        key, _, value = s.partition("=")
        out[(section, key.strip())] = value.strip()
    return out


def tree_files(folder):
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and "__pycache__" not in p.parts}


def venv_python(root):
    return root / ".venv" / "bin" / "python3"


def offline_config(root):
    """Point both provider slots nowhere, so a tick fails fast instead of reaching the internet."""
    cfg_path = root / "config.yaml"
    cfg = yaml.safe_load(cfg_path.read_text())
    for slot in ("primary", "fallback"):
        cfg["llm"][slot]["base_url"] = ""
    cfg["telegram"]["bot_token"] = ""
    cfg_path.write_text(yaml.safe_dump(cfg))


def as_nobody():
    """Command prefix that drops to uid/gid 65534, or None when that cannot be done here."""
    if os.geteuid() != 0:
        return None
    if shutil.which("setpriv"):
        return ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"]
    if shutil.which("runuser"):
        return ["runuser", "-u", "nobody", "--"]
    return None


# -------------------------------------------------------------------------------------------------------


def test_install_creates_tree_seeds_and_copies_code(box):
    r = run_install(box)
    root = box["root"]
    for d in RUNTIME_DIRS:
        assert (root / d).is_dir(), d
        assert (root / d).stat().st_mode & 0o777 == 0o700, d
    for name in STATE_SEEDS:
        assert (root / "state" / name).read_bytes() == (REPO / "seed" / name).read_bytes(), name
    assert (root / "notes" / "INDEX.md").read_bytes() == (REPO / "seed" / "notes" / "INDEX.md").read_bytes()
    for name in CODE_FILES:
        if (REPO / name).exists():
            assert (root / name).read_bytes() == (REPO / name).read_bytes(), name
    for d in ("mako", "prompts", "seed"):
        assert tree_files(root / d) == tree_files(REPO / d), d
    assert not list(root.glob(".*.new.*")) and not list(root.glob(".*.old.*"))
    assert "seeded state/MISSION.md" in r.stdout


def test_install_seeds_config_0600_with_the_real_root(box):
    run_install(box)
    root = box["root"]
    config = root / "config.yaml"
    assert config.stat().st_mode & 0o777 == 0o600
    seeded = yaml.safe_load(config.read_text())
    assert seeded["paths"]["root"] == str(root)
    example = yaml.safe_load((REPO / "config.example.yaml").read_text())
    example["paths"]["root"] = str(root)
    assert seeded == example
    # Only the root line differs: the example's comments stay for the operator to read.
    diff = [(a, b) for a, b in zip((REPO / "config.example.yaml").read_text().splitlines(),
                                    config.read_text().splitlines()) if a != b]
    assert diff == [("  root: /srv/mako-zero", f"  root: {root}")]
    # And the project's own loader agrees, run by the installed interpreter.
    out = subprocess.run([str(venv_python(root)), "-c",
                          "import sys; sys.path.insert(0, sys.argv[1]); from mako.config import load_config; "
                          "print(load_config(sys.argv[2]).paths.root)", str(root), str(config)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == str(root)


def test_install_unit_points_at_root_and_venv(box):
    r = run_install(box)
    root = box["root"]
    unit = box["units"] / "mako-zero.service"
    d = unit_directives(unit.read_text())
    py = venv_python(root)
    assert d[("Service", "ExecStart")] == f"{py} -u {root}/supervisor.py --config {root}/config.yaml"
    assert d[("Service", "WorkingDirectory")] == str(root)
    expected = {
        ("Unit", "After"): "network-online.target", ("Unit", "Wants"): "network-online.target",
        ("Service", "Type"): "simple", ("Service", "User"): "root",
        ("Service", "Environment"): "PYTHONUNBUFFERED=1", ("Service", "Restart"): "on-failure",
        ("Service", "RestartSec"): "10", ("Service", "RestartPreventExitStatus"): "78",
        ("Service", "KillMode"): "mixed", ("Service", "KillSignal"): "SIGTERM",
        ("Service", "TimeoutStopSec"): "30", ("Service", "StandardOutput"): "journal",
        ("Service", "StandardError"): "journal", ("Install", "WantedBy"): "multi-user.target",
    }
    for key, value in expected.items():
        assert d.get(key) == value, key
    assert ("Unit", "StartLimitIntervalSec") in d and ("Unit", "StartLimitBurst") in d
    assert not any("@" in v for v in d.values())
    # The stop timeout must outlast the supervisor's own grace for its child.
    assert int(d[("Service", "TimeoutStopSec")]) > 10
    assert py.is_file() and os.access(py, os.X_OK)
    assert unit.stat().st_mode & 0o777 == 0o644
    assert f"unit: installed {unit}" in r.stdout


def test_install_unit_passes_systemd_analyze_verify(box):
    if not shutil.which("systemd-analyze"):
        pytest.skip("systemd-analyze is not installed")
    run_install(box)
    unit = box["units"] / "mako-zero.service"
    r = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stderr.strip() == "", r.stderr
    assert r.stdout.strip() == "", r.stdout


def test_install_systemctl_only_where_systemd_runs(box):
    r = run_install(box)
    calls = box["calls"].read_text().splitlines() if box["calls"].exists() else []
    if os.path.isdir("/run/systemd/system"):
        assert calls == ["daemon-reload"]
        assert "systemctl enable --now mako-zero" in r.stdout
    else:
        assert calls == []
        assert "daemon-reload skipped" in r.stdout
        assert f"{venv_python(box['root'])} -u {box['root']}/supervisor.py" in r.stdout


def test_install_honours_service_name(box):
    run_install(box, MAKO_SERVICE="mako-test")
    assert (box["units"] / "mako-test.service").is_file()
    assert not (box["units"] / "mako-zero.service").exists()


def test_install_second_run_keeps_operator_files_and_refreshes_code(box):
    run_install(box)
    root = box["root"]
    edits = {
        root / "config.yaml": "# mine\n" + (root / "config.yaml").read_text().replace('api_key: ""', 'api_key: "k"'),
        root / "state" / "MISSION.md": "Sell mink plushies.\n",
        root / "notes" / "INDEX.md": "- plan.md: the plan\n",
        root / "notes" / "plan.md": "step 1\n",
        root / "state" / "JOURNAL.md": "#1 2025-01-01T00:00:00Z — hello\n",
    }
    for path, text in edits.items():
        path.write_text(text)
    (root / "config.yaml").chmod(0o644)
    (root / "mako" / "config.py").write_text("broken = True\n")
    (root / "mako" / "stale_module.py").write_text("gone = False\n")
    (root / "mako" / "__pycache__").mkdir(exist_ok=True)
    (root / "mako" / "__pycache__" / "stale_module.cpython-311.pyc").write_bytes(b"\0")
    (root / "prompts" / "system.md").write_text("tampered\n")
    unit = box["units"] / "mako-zero.service"
    unit_before = unit.read_text()

    started = time.monotonic()
    r = run_install(box)
    warm_s = time.monotonic() - started

    for path, text in edits.items():
        assert path.read_text() == text, path
    assert (root / "config.yaml").stat().st_mode & 0o777 == 0o600
    assert "now 0600" in r.stdout
    assert (root / "mako" / "config.py").read_bytes() == (REPO / "mako" / "config.py").read_bytes()
    assert not (root / "mako" / "stale_module.py").exists()
    # The stale bytecode went with the old folder; the new code's is compiled, so no tick compiles mako/.
    assert not (root / "mako" / "__pycache__" / "stale_module.cpython-311.pyc").exists()
    assert {p.name.split(".")[0] for p in (root / "mako" / "__pycache__").glob("*.pyc")} == {
        p.stem for p in (REPO / "mako").glob("*.py")}
    assert (root / "prompts" / "system.md").read_bytes() == (REPO / "prompts" / "system.md").read_bytes()
    assert unit.read_text() == unit_before
    assert "venv: requests and PyYAML present" in r.stdout
    assert "venv: creating" not in r.stdout
    assert "seeded" not in r.stdout
    print(f"warm install.sh run: {warm_s:.2f}s")


def test_install_installed_copy_upgrades_its_own_root_and_unit(box):
    default_root = Path("/srv/mako-zero")
    if default_root.exists():
        pytest.skip("a real install is at /srv/mako-zero; this test must not risk touching it")
    run_install(box, MAKO_SERVICE="mako-trial")
    root, units = box["root"], box["units"]
    unit = units / "mako-trial.service"
    rendered = unit.read_text()
    unit.write_text(rendered.replace("Restart=", "Restart=no\n#Restart="))
    other = units / "mako-zero.service"
    other.write_text(rendered.replace(str(root), "/srv/another-root"))
    (root / "state" / "MISSION.md").unlink()
    env = install_env(root, units, box["stub"])
    del env["MAKO_ROOT"]
    try:
        r = subprocess.run(["bash", str(root / "install.sh")], env=env, cwd="/", capture_output=True, text=True,
                           timeout=600)
        assert r.returncode == 0, r.stdout + r.stderr
        assert not default_root.exists()
    finally:
        if default_root.exists():
            shutil.rmtree(default_root)
    assert f"mako-zero is installed in {root}." in r.stdout
    assert f"code: {root} is the root itself, nothing to copy" in r.stdout
    assert (root / "state" / "MISSION.md").exists()
    assert unit.read_text() == rendered and f"unit: installed {unit}" in r.stdout
    assert other.read_text() == rendered.replace(str(root), "/srv/another-root")
    assert sorted(p.name for p in units.iterdir()) == ["mako-trial.service", "mako-zero.service"]


def test_install_installed_copy_without_its_unit_installs_none(box):
    run_install(box)
    (box["units"] / "mako-zero.service").unlink()
    env = install_env(box["root"], box["units"], box["stub"])
    del env["MAKO_ROOT"]
    r = subprocess.run(["bash", str(box["root"] / "install.sh")], env=env, cwd="/", capture_output=True,
                       text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"unit: no unit in {box['units']} runs {box['root']}, so none is installed" in r.stdout
    assert list(box["units"].iterdir()) == []


def test_install_cloned_into_root_copies_and_deletes_nothing(box):
    root = box["root"]
    shutil.copytree(REPO, root, symlinks=True, ignore=shutil.ignore_patterns(
        ".git", "__pycache__", ".pytest_cache", ".venv", "config.yaml", "state", "notes", "workdir", "archive",
        "pending", "logs"))
    (root / "mako" / "local_patch.py").write_text("x = 1\n")
    (root / "OPERATOR_NOTES.txt").write_text("mine\n")
    before = tree_files(root)

    r = run_install(box, script=root / "install.sh")

    assert "nothing to copy" in r.stdout
    after = tree_files(root)
    for rel, data in before.items():
        assert after.get(rel) == data, rel
    assert yaml.safe_load((root / "config.yaml").read_text())["paths"]["root"] == str(root)
    assert (root / "state" / "MISSION.md").read_bytes() == (root / "seed" / "MISSION.md").read_bytes()
    d = unit_directives((box["units"] / "mako-zero.service").read_text())
    assert d[("Service", "ExecStart")] == f"{venv_python(root)} -u {root}/supervisor.py --config {root}/config.yaml"
    assert not list(root.glob(".*.new.*"))


@pytest.mark.parametrize("missing", ["mako", "requirements.txt"])
def test_install_fails_clearly_without_required_code(box, tmp_path, missing):
    src = tmp_path / "src"
    shutil.copytree(REPO, src, ignore=shutil.ignore_patterns(".git", "__pycache__", ".pytest_cache", missing))
    r = run_install(box, script=src / "install.sh", check=False)
    assert r.returncode != 0
    assert f"{src}/{missing}" in r.stderr and "is missing" in r.stderr
    assert not (box["root"] / "state").exists()


def test_install_refuses_non_root_without_mako_root(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAKO_")}
    if os.geteuid() != 0:
        cmd = ["bash", str(INSTALL)]
    else:
        prefix = as_nobody()
        if prefix is None:
            pytest.skip("running as root and neither setpriv nor runuser is available to drop privileges")
        # The script must be readable by the unprivileged user; tmp_path's parents are not.
        shared = Path(tempfile.mkdtemp(prefix="mako-install-"))
        shared.chmod(0o755)
        shutil.copy(INSTALL, shared / "install.sh")
        (shared / "install.sh").chmod(0o644)
        cmd = prefix + ["bash", str(shared / "install.sh")]
    try:
        r = subprocess.run(cmd, env=env, cwd="/", capture_output=True, text=True, timeout=60)
    finally:
        if os.geteuid() == 0:
            shutil.rmtree(shared, ignore_errors=True)
    assert r.returncode == 1
    assert "must run as root" in r.stderr and "MAKO_ROOT" in r.stderr
    assert r.stdout == ""


def _world_readable_copy(src, dst, ignore=None):
    shutil.copytree(src, dst, ignore=ignore)
    for p in [dst, *dst.rglob("*")]:
        p.chmod(0o755 if p.is_dir() else 0o644)


def test_install_as_non_root_with_mako_root_installs_no_unit():
    prefix = as_nobody()
    if prefix is None:
        pytest.skip("needs root with setpriv or runuser to run the script as an unprivileged user")
    version = "%d.%d" % sys.version_info[:2]
    python = next((c for c in ("/usr/bin/python3", sys.executable)
                   if subprocess.run(prefix + [c, "-c", "import sys, venv; print('%d.%d' % sys.version_info[:2])"],
                                     capture_output=True, text=True).stdout.strip() == version), None)
    if python is None:
        pytest.skip(f"no Python {version} that uid {NOBODY} may run")
    import requests
    shared = Path(tempfile.mkdtemp(prefix="mako-install-"))
    try:
        shared.chmod(0o755)
        _world_readable_copy(REPO, shared / "src", shutil.ignore_patterns(
            ".git", "__pycache__", ".pytest_cache", ".venv", "tests", "bench"))
        # The unprivileged user cannot read this interpreter's site-packages, so the deps travel along.
        site = shared / "site"
        site.mkdir()
        for mod in ("requests", "urllib3", "idna", "charset_normalizer", "certifi", "yaml"):
            m = __import__(mod)
            _world_readable_copy(Path(m.__file__).parent, site / mod)
        site.chmod(0o755)
        root, units = shared / "root", shared / "units"
        root.mkdir()
        os.chown(root, NOBODY, NOBODY)
        units.mkdir(mode=0o755)
        env = {k: v for k, v in os.environ.items() if not k.startswith("MAKO_")}
        env.update(MAKO_ROOT=str(root), SYSTEMD_DIR=str(units), MAKO_VENV_SYSTEM_SITE="1", MAKO_PYTHON=python,
                   PYTHONPATH=str(site), HOME=str(root))
        r = subprocess.run(prefix + ["bash", str(shared / "src" / "install.sh")], env=env, cwd=str(shared),
                           capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stdout + r.stderr
        assert "not root, so no systemd unit is installed" in r.stdout
        assert list(units.iterdir()) == []
        assert "systemctl enable" not in r.stdout
        config = root / "config.yaml"
        assert config.stat().st_uid == NOBODY and config.stat().st_mode & 0o777 == 0o600
        assert (root / "state" / "MISSION.md").stat().st_uid == NOBODY
        assert requests  # imported above only to be sure the copy had a source
    finally:
        shutil.rmtree(shared, ignore_errors=True)


def test_install_tick_dry_run_from_installed_venv(box):
    run_install(box)
    root = box["root"]
    offline_config(root)
    r = subprocess.run([str(venv_python(root)), str(root / "tick.py"), "--config", str(root / "config.yaml"),
                        "--dry-run"], cwd="/", capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    mission = (root / "state" / "MISSION.md").read_text().strip().splitlines()[0]
    assert "## MISSION" in r.stdout and mission in r.stdout
    assert not (root / "state" / "tick_counter.txt").exists()
    assert not (root / "logs" / "metrics.csv").exists()


def test_install_supervisor_runs_from_installed_venv(box):
    run_install(box)
    root = box["root"]
    offline_config(root)
    proc = subprocess.Popen([str(venv_python(root)), "-u", str(root / "supervisor.py"), "--config",
                             str(root / "config.yaml")], cwd=str(root), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    lines = []
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line.rstrip("\n"))
            if re.match(r"\[supervisor\] tick\(normal\): done rc=\d+ in [\d.]+s", lines[-1]):
                break
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert lines and lines[0] == "[supervisor] starting", lines
    assert any(re.match(r"\[supervisor\] tick\(normal\): done rc=\d+", ln) for ln in lines), (lines, err)
    assert proc.returncode == 0, err


def test_install_reset_procedure_reseeds_and_tick_runs(box):
    run_install(box)
    root = box["root"]
    offline_config(root)
    config_before = (root / "config.yaml").read_bytes()
    (root / "state" / "MISSION.md").write_text("old mission\n")
    (root / "state" / "JOURNAL.md").write_text("#7 old line\n")
    (root / "notes" / "plan.md").write_text("old plan\n")
    (root / "logs" / "metrics.csv").write_text("ts\n")
    (root / "pending" / "pending_actions.jsonl").write_text("{}\n")
    # The README's reset, word for word apart from the root.
    subprocess.run(["bash", "-c", f"rm -rf {root}/state/* {root}/notes/* {root}/workdir/* {root}/archive/* "
                                  f"{root}/pending/* {root}/logs/*"], check=True)
    run_install(box)
    assert (root / "config.yaml").read_bytes() == config_before
    assert (root / "state" / "MISSION.md").read_bytes() == (REPO / "seed" / "MISSION.md").read_bytes()
    assert not (root / "state" / "JOURNAL.md").exists() and not (root / "notes" / "plan.md").exists()
    for d in RUNTIME_DIRS:
        assert (root / d).is_dir(), d
    r = subprocess.run([str(venv_python(root)), str(root / "tick.py"), "--config", str(root / "config.yaml"),
                        "--dry-run"], cwd="/", capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "## MISSION" in r.stdout


@pytest.mark.skipif(os.environ.get("MAKO_TEST_NETWORK_INSTALL") != "1",
                    reason="real pip install from the package index; set MAKO_TEST_NETWORK_INSTALL=1 to run")
def test_install_network_pip_into_fresh_venv(box):
    started = time.monotonic()
    r = run_install(box, MAKO_VENV_SYSTEM_SITE="0", PYTHONPATH="")
    cold_s = time.monotonic() - started
    root = box["root"]
    assert "venv: pip install -r requirements.txt" in r.stdout
    out = subprocess.run([str(venv_python(root)), "-c", "import requests, yaml; print(requests.__file__); "
                          "print(yaml.__file__)"], capture_output=True, text=True, timeout=60, env={})
    assert out.returncode == 0, out.stderr
    for path in out.stdout.split():
        assert path.startswith(str(root / ".venv")), path
    assert (root / ".venv" / ".requirements.sha256").is_file()
    started = time.monotonic()
    again = run_install(box, MAKO_VENV_SYSTEM_SITE="0", PYTHONPATH="")
    warm_s = time.monotonic() - started
    assert "venv: requests and PyYAML present" in again.stdout
    print(f"cold install.sh run with pip: {cold_s:.1f}s, warm run: {warm_s:.2f}s")


def test_install_keeps_and_checks_an_existing_config(box):
    root = box["root"]
    root.mkdir()
    text = "llm: {}\npaths:\n  root: /elsewhere\ntick:\n  frobnicate_level: 3\n"
    (root / "config.yaml").write_text(text)
    (root / "config.yaml").chmod(0o600)
    r = run_install(box)
    assert (root / "config.yaml").read_text() == text
    assert f"paths.root is /elsewhere, not {root}" in r.stderr
    # The config check runs last and prints its lines: an unknown key is a warning, a missing root an error.
    tail = r.stdout[r.stdout.index("Config check ("):].splitlines()
    assert any(line.startswith("warning: ") and "unknown key tick.frobnicate_level" in line for line in tail)
    assert "error: paths.root: /elsewhere does not exist (install.sh creates it, or fix the path)" in tail
    assert tail[-2].startswith("Fix the errors above in ")
    assert "now 0600" not in r.stdout


def test_install_runs_the_config_check_last_on_a_fresh_config(box):
    r = run_install(box)
    tail = r.stdout[r.stdout.index("Config check ("):].splitlines()
    assert r.stdout.rstrip().endswith(tail[-1])
    # The seeded config has no API keys yet: the check says so, one line per slot.
    assert any(line.startswith("error: llm.primary.api_key is empty, and ollama at ollama.com needs one")
               for line in tail)
    assert any(line.startswith("error: llm.fallback.api_key is empty") for line in tail)
    assert "note: Telegram inbound is off (telegram.inbound.enabled is false)" in tail
    assert (box["root"] / "status.py").is_file()
