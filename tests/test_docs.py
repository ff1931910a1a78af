"""The README's instructions, checked against what the project does: commands an operator pastes must work."""

import re
import shlex

from conftest import REPO
from test_faults import FAULTS, OPENAI_ONLY, matrix

README = (REPO / "README.md").read_text(encoding="utf-8")


def section(title):
    start = README.index(f"\n## {title}\n")
    end = README.find("\n## ", start + 1)
    return README[start:end if end > 0 else None]


def bash_blocks(text):
    return re.findall(r"```bash\n(.*?)```", text, re.S)


def commands(block):
    return [line.strip() for line in block.splitlines() if line.strip() and not line.strip().startswith("#")]


def test_docs_test_command_is_one_venv_command_that_ci_runs():
    (command,) = commands(bash_blocks(section("Tests"))[0])
    # Ubuntu 24.04 refuses a system-wide pip (PEP 668): everything is installed into a venv first.
    assert command.startswith("python3 -m venv ")
    steps = [shlex.split(step) for step in command.split("&&")]
    assert not any(s[:3] == ["python3", "-m", "pip"] or s[:1] in (["pip"], ["pip3"]) for s in steps)
    ci = [line.strip() for line in (REPO / ".ci" / "run").read_text().splitlines()
          if line.strip() and not line.strip().startswith("#")]
    assert ci[-1] == command


def test_docs_inbox_examples_append_never_overwrite():
    writes = [line for block in bash_blocks(README) for line in block.splitlines()
              if re.search(r">\s*\S*INBOX\.md", line)]
    assert writes and all(re.search(r">>\s*\S*INBOX\.md", line) for line in writes), writes


def test_docs_trial_block_is_safe_to_paste_as_root():
    block = bash_blocks(section("Try it without a server"))[0]
    installs = [c for c in commands(block) if "install.sh" in c]
    # As root an install without SYSTEMD_DIR would write /etc/systemd/system/mako-zero.service.
    assert installs and all("SYSTEMD_DIR=" in c and "MAKO_ROOT=" in c for c in installs)


def test_docs_fault_count_is_the_matrix():
    report = (REPO / "docs" / "RELIABILITY.md").read_text(encoding="utf-8")
    m = re.search(r"(\d+) provider faults.*?\((\d+) rows\)", report, re.S)
    assert m and int(m.group(1)) == len(FAULTS) and int(m.group(2)) == len(matrix())
    assert len(OPENAI_ONLY) == 2 and "OpenCode's two 200 envelopes" in report


def test_docs_readme_is_in_operator_order_and_links_the_reports():
    titles = re.findall(r"^## (.+)$", re.sub(r"```.*?```", "", README, flags=re.S), re.M)
    first = ["Install — clean Ubuntu 24.04 server (with systemd)", "Try it without a server", "Configure",
             "Running it"]
    assert titles[:4] == first
    later = ["Approving actions", "Is it healthy?", "Logs", "Upgrade", "Resetting", "How it works", "Tests",
             "Reliability", "Performance"]
    assert [t for t in titles if t in later] == later
    for doc in ("docs/RELIABILITY.md", "docs/PERFORMANCE.md"):
        assert f"]({doc})" in README and (REPO / doc).is_file()
