"""listen.py (§20): what reaches the INBOX from the chat and how, commands, buttons, faults, exactly once."""

import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from conftest import BOT_TOKEN, CHAT_ID, REPO, THREADS
from fakes import Reply

from mako import inbox as inbox_mod
from mako.commands import UNAVAILABLE, parse, parse_button
from mako.steering import append_entry, record_question

CHRIS = 4242
STRANGER = 777
BOT_ID = 123456789


@pytest.fixture
def chat(root):
    """The root with inbound on for CHRIS; the fake knows the chat."""
    root.telegram.chat_id = CHAT_ID
    root.write_config(telegram={"inbound": {"enabled": True, "allowed_user_ids": [CHRIS]}})
    return root


def listen(root, *args):
    import listen as entry
    return entry.main(["--config", str(root.config_path), *args])


def inbox(root):
    path = root.p("state/INBOX.md")
    return path.read_text(encoding="utf-8") if path.exists() else ""


def test_listen_steering_lands_in_inbox_with_header_and_is_acknowledged(chat, capsys):
    tg = chat.telegram
    tg.send_text("Please look at the blog draft first.", CHRIS, thread=THREADS["requests"])
    assert listen(chat, "--once") == 0
    text = inbox(chat)
    assert "[telegram · Chris · " in text
    assert " UTC · thread requests]\n> Please look at the blog draft first.\n" in text
    acks = [p for p, _ in tg.delivered if "Got it" in p["text"]]
    assert len(acks) == 1 and acks[0]["message_thread_id"] == THREADS["requests"]
    assert "1 taken (1 steering)" in capsys.readouterr().out
