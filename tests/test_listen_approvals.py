"""Approvals from the chat (§19-§20): `approve|reject|done qN` and the buttons decide through the same code
as approve.py, bound to the hash the post showed, each exactly once."""

import json
import time

from conftest import CHRIS, STRANGER, THREADS, reply

RUN = {"type": "shell", "cmd": "echo ran >> ran.txt", "needs_approval": True}


def listen(root, *args):
    import listen as entry
    return entry.main(["--config", str(root.config_path), *(args or ("--once",))])


def queue(root, *actions):
    """Queue gated actions through a real tick; returns the approvals posts (params, message)."""
    root.ollama.reply_content(reply(actions=list(actions)))
    assert root.tick() == 0
    return [(p, m) for p, m in root.telegram.delivered if p["text"].startswith("⏸ q")]


def decisions(root):
    path = root.p("pending/decisions.jsonl")
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def ran(root):
    path = root.p("workdir/ran.txt")
    return path.read_text().count("ran") if path.exists() else 0


def test_chat_approve_runs_once_and_replies_in_thread(chat):
    queue(chat, RUN)
    chat.telegram.send_text("approve q1 go ahead", CHRIS, thread=THREADS["approvals"])
    chat.telegram.send_text("yes q1", CHRIS, thread=THREADS["approvals"])
    assert listen(chat) == 0
    assert ran(chat) == 1
    final = [d for d in decisions(chat) if d.get("result") is not None]
    assert len(final) == 1 and final[0]["by"] == f"telegram:{CHRIS}" and final[0]["note"] == "go ahead"
    replies = [p["text"] for p, _ in chat.telegram.delivered if p.get("message_thread_id") == THREADS["approvals"]]
    assert any("q1" in text and "already" in text for text in replies)
    # Asked in the approvals thread, the decision post is the answer: no second copy of it.
    assert len([text for text in replies if text.startswith("✅ q1 approved")]) == 1


def test_chat_approve_elsewhere_is_answered_there(chat):
    queue(chat, RUN)
    chat.telegram.send_text("approve q1", CHRIS, thread=THREADS["log"])
    assert listen(chat) == 0
    assert ran(chat) == 1
    log = [p["text"] for p, _ in chat.telegram.delivered if p.get("message_thread_id") == THREADS["log"]]
    assert log[-1].startswith("✅ q1 approved")


def test_chat_reject_and_done_record_without_running(chat):
    queue(chat, RUN, dict(RUN, cmd="echo ran >> ran.txt # 2"))
    chat.telegram.send_text("no q1 not now", CHRIS)
    chat.telegram.send_text("/done q2 did it myself", CHRIS)
    assert listen(chat) == 0
    assert ran(chat) == 0
    got = {d["id"]: (d["decision"], d["note"], d["by"]) for d in decisions(chat)}
    assert got == {"q1": ("rejected", "not now", f"telegram:{CHRIS}"),
                   "q2": ("done", "did it myself", f"telegram:{CHRIS}")}


def test_chat_unknown_id_is_one_line_nothing_decided(chat):
    queue(chat, RUN)
    chat.telegram.send_text("approve q999999", CHRIS)
    assert listen(chat) == 0
    assert ran(chat) == 0 and decisions(chat) == []
    assert "q999999" in chat.telegram.texts()[-1] and "\n" not in chat.telegram.texts()[-1]


def test_button_press_decides_answers_and_edits_the_post(chat):
    posts = queue(chat, RUN)
    params, post = posts[0]
    data = params["reply_markup"]["inline_keyboard"][0][0]["callback_data"]
    assert data.startswith("a:q1:")
    chat.telegram.press(data, STRANGER, post["message_id"])
    chat.telegram.press(data, CHRIS, post["message_id"])
    chat.telegram.press(data, CHRIS, post["message_id"])
    assert listen(chat) == 0
    assert ran(chat) == 1
    answers = [a["text"] for a in chat.telegram.answers]
    assert answers[0] == "Only the operator can decide this."
    assert "q1" in answers[1] and "already" not in answers[1]
    assert "already" in answers[2]
    edited = chat.telegram.sent_message(post["message_id"])
    assert "✅ approved by Chris" in edited["text"] and "reply_markup" not in edited
    assert len(chat.telegram.edits) == 1


def test_button_bound_to_the_hash_the_post_showed(chat):
    queue(chat, RUN)
    chat.telegram.press("a:q1:00000000", CHRIS, chat.telegram.delivered[-1][1]["message_id"])
    assert listen(chat) == 0
    assert ran(chat) == 0 and not [d for d in decisions(chat) if d["decision"] == "approved"]
    assert "00000000" in chat.telegram.answers[0]["text"]


def test_reject_button(chat):
    params, post = queue(chat, RUN)[0]
    data = params["reply_markup"]["inline_keyboard"][0][1]["callback_data"]
    chat.telegram.press(data, CHRIS, post["message_id"])
    assert listen(chat) == 0
    assert ran(chat) == 0 and [d["decision"] for d in decisions(chat)] == ["rejected"]
    assert "🚫 rejected by Chris" in chat.telegram.sent_message(post["message_id"])["text"]


def test_kill_after_decision_before_mark_does_not_decide_again(chat):
    queue(chat, RUN)
    uid = chat.telegram.send_text("approve q1", CHRIS)
    chat.p("state/.mako").mkdir(parents=True, exist_ok=True)
    from mako.decisions import decide
    assert decide(chat.cfg(), "q1", "approved", f"telegram:{CHRIS}").ok  # the effect, then the kill
    chat.p("state/.mako/telegram_applied.json").write_text(json.dumps(
        {"done": [], "started": {"id": uid, "at": time.time(), "entry": None}}))
    assert listen(chat) == 0
    assert ran(chat) == 1
    assert len([d for d in decisions(chat) if d.get("result") is not None]) == 1
