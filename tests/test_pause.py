"""The pause switch seen from a tick (§21): the model cannot set or lift it, and a manual tick still runs."""

import pytest

from conftest import reply


@pytest.mark.parametrize("existing", [None, "operator: checking the bill\n"])
def test_pause_model_writes_cannot_create_or_change_the_pause_file(root, existing):
    root.p("state").mkdir(parents=True)
    pause_file = root.p("state/PAUSED")
    if existing:
        pause_file.write_text(existing)
    root.ollama.reply_content(reply(
        files=[{"path": "state/PAUSED", "content": "model says stop"},
               {"path": "state/PAUSED/why.md", "content": "a folder pauses too"}],
        actions=[{"type": "write_file", "path": "state/PAUSED", "content": "", "mode": "append"},
                 {"type": "write_file", "path": "notes/fine.md", "content": "allowed"}]))
    assert root.tick() == 0  # a manual tick runs even while paused
    assert (pause_file.read_text() if pause_file.exists() else None) == existing
    payload = root.payload(1)
    assert [w["status"] for w in payload["files_written"]] == ["refused", "refused"]
    assert [a["ok"] for a in payload["actions"]] == [False, True]
    assert root.read("notes/fine.md") == "allowed"
