"""listen.py's loop (§20): long-poll the chat until a given time, act on each update exactly once.

Exactly once, across kills and restarts:
- The offset sent to getUpdates (which makes Telegram forget everything below it) is persisted in
  `state/.mako/telegram_offset` only after the update's effect is durable, so a kill before that point
  gets the update again.
- Each effect is idempotent by update_id through `state/.mako/telegram_applied.json`: the ids finished
  recently, and the one being worked on. A steering entry is recorded there (with its exact text) before it
  is appended; if a kill comes between the append and the "finished" mark, the next run finds the entry in
  the INBOX, a claim or a fresh archive and does not append it again. A decision is safe to repeat by
  itself: mako.decisions refuses an id that is already decided.

Telegram's faults are waited out inside the run's time: 429 for its retry_after, 409 (another poller),
5xx and refused connections with a growing pause. A 401 is one clear line and exit 1. SIGTERM ends the
run within a second, even in the middle of a long poll, but never in the middle of an effect.
"""

import json
import sys
import time
from collections import Counter

from .children import StopSignal
from .commands import DECISION, Commands, parse, parse_button
from .fileio import atomic_write, displace, read_text
from .inbound import IGNORED, BotApi, BotApiError, allowed, classify, same_chat, sender_name, topic_of
from .redact import Redactor
from .steering import append_entry, asked_ids, entry_landed, entry_text, replied_to_id

OFFSET_FILE = "telegram_offset"
LOCK_FILE = "listen.lock"
APPLIED_FILE = "telegram_applied.json"
APPLIED_KEEP = 500
STALE_OFFSET_S = 6 * 86400
MIN_POLL_LEFT_S = 2.0
BACKOFF_FIRST_S = 1.0
BACKOFF_MAX_S = 30.0
CONFLICT_WAIT_S = 5.0
APPROVAL_SLACK_S = 15.0
ACK = "📥 Got it: in the INBOX for the next tick."
DECIDED_MARK = {"approved": "✅ approved", "rejected": "🚫 rejected"}


class Interrupted(Exception):
    """SIGTERM arrived during a long poll."""


class Deferred(Exception):
    """An approval came too close to the end of the run to finish before the next job: leave it for later."""


class Stop(StopSignal):
    """StopSignal that also breaks out of a blocking long poll (but of nothing else)."""

    polling = False

    def _handle(self, signum, frame):
        self.signum = signum
        if self.polling:
            self.polling = False
            raise Interrupted()


class Bookkeeping:
    """The persisted offset and the applied-ids record, both in state/.mako/."""

    def __init__(self, paths):
        self.offset_path = paths.private / OFFSET_FILE
        self.applied_path = paths.private / APPLIED_FILE
        try:
            value = int(read_text(self.offset_path, "0").strip() or 0)
            # After a week without updates Telegram may number the next one at random, even below an old
            # offset (protocols.md §3.5): poll from the start of what it holds; the applied ids stop repeats.
            if time.time() - self.offset_path.stat().st_mtime > STALE_OFFSET_S:
                value = 0
        except (ValueError, OSError):
            value = 0
        self.offset = max(0, value)
        try:
            data = json.loads(read_text(self.applied_path, "{}"))
        except ValueError:
            data = {}
        data = data if isinstance(data, dict) else {}
        done = data.get("done") if isinstance(data.get("done"), list) else []
        self.done = [i for i in done if isinstance(i, int)]
        started = data.get("started")
        self.started = started if isinstance(started, dict) and isinstance(started.get("id"), int) else None

    def _save(self):
        displace(self.applied_path)  # a folder or link planted there must not stop the listener for good
        atomic_write(self.applied_path, json.dumps({"done": self.done[-APPLIED_KEEP:], "started": self.started},
                                                   ensure_ascii=False) + "\n")

    def start(self, uid, entry=None):
        self.started = {"id": uid, "at": time.time(), "entry": entry}
        self._save()

    def started_for(self, uid):
        return self.started if self.started and self.started["id"] == uid else None

    def finish(self, uid):
        self.done = [i for i in self.done if i != uid][-(APPLIED_KEEP - 1):] + [uid]
        self.started = None
        self._save()

    def advance(self, uid):
        if uid + 1 > self.offset:
            self.offset = uid + 1
            displace(self.offset_path)
            atomic_write(self.offset_path, f"{self.offset}\n")


class Listener:
    """One run of listen.py: poll until `until` (or once), print what was taken and ignored."""

    def __init__(self, cfg, stop, clock=time.time, out=print):
        self.until = None
        self.cfg = cfg
        self.tg = cfg.telegram
        self.stop = stop
        self.clock = clock
        self.out = out
        self.redactor = Redactor(cfg.secrets())
        self.api = BotApi(self.tg, self.redactor)
        self.book = Bookkeeping(cfg.paths)
        self.telegram = None
        self.commands = None
        self.bot_username = None
        self.taken = Counter()
        self.ignored = Counter()
        self.switched = False  # a pause or resume was taken this run

    def say(self, text, err=False):
        self.out(f"listen: {self.redactor.text(text)}", file=sys.stderr if err else sys.stdout, flush=True)

    # -- the loop -------------------------------------------------------------------------------------------

    def run(self, until=None, once=False):
        """Poll until the epoch `until` (None: until stopped), or once.

        Exit code: 0 after a normal end or SIGTERM, 1 on a bad token (or on any error with --once).
        """
        self.until = until
        self.api.deadline = until
        self.commands = Commands(self.cfg, self._client, until, clock=self.clock)
        try:
            return self._loop(until, once)
        finally:
            self.api.close()
            if self.telegram is not None:
                self.telegram.close()
            # A quiet gap says nothing (the supervisor's start and done lines already mark it).
            if once or until is None or self.taken or self.ignored:
                self.say(self.summary())

    def _client(self):
        """The TelegramClient for replies and decision posts, made on first use: an idle listener does
        without its code."""
        if self.telegram is None:
            from .telegram import TelegramClient
            self.telegram = TelegramClient(self.tg, self.redactor, deadline=self.until, clock=self.clock)
        return self.telegram

    def _poll(self, timeout, read_timeout):
        self.stop.polling = True
        try:
            if self.stop.requested:
                raise Interrupted()
            return self.api.get_updates(self.book.offset, timeout, read_timeout)
        finally:
            self.stop.polling = False

    def _loop(self, until, once):
        backoff = BACKOFF_FIRST_S
        try:
            self.bot_username = self._whoami()
        except BotApiError:
            return self._refused()
        except Interrupted:
            return 0
        while not self.stop.requested:
            if once:
                timeout, read = 0, 10.0
            else:
                left = self._left(until)
                if left < MIN_POLL_LEFT_S:
                    break
                timeout = int(min(50, left - 1))
                read = min(timeout + 10.0, left)
            try:
                updates = self._poll(timeout, read)
            except Interrupted:
                break
            except BotApiError as e:
                if e.kind == "unauthorized":
                    return self._refused()
                if once:
                    self.say(f"getUpdates failed: {e}", err=True)
                    return 1
                wait = self._wait_for(e, backoff)
                backoff = min(backoff * 2, BACKOFF_MAX_S)
                self.say(f"getUpdates: {e.kind}: {e} (waiting {wait:.0f}s)", err=True)
                self.stop.sleep(min(wait, max(0.0, self._left(until) - MIN_POLL_LEFT_S)))
                continue
            backoff = BACKOFF_FIRST_S
            try:
                for update in sorted(updates, key=lambda u: u["update_id"]):
                    uid = update["update_id"]
                    if uid < self.book.offset:
                        continue  # confirmed already; only a misbehaving server sends it again
                    self.handle(update)
                    self.book.advance(uid)
            except Deferred:
                self.say("an approval waits for the next run: too little time left to run it now")
                break
            if self.switched and until is not None:
                break  # pause or resume: end the run so the supervisor acts on it now, not at the gap's end
            if once:
                if self.book.offset:
                    self._confirm()
                break
        return 0

    def _left(self, until):
        return float("inf") if until is None else until - self.clock()

    def _refused(self):
        self.say("Telegram refused the bot token (401 Unauthorized); check telegram.bot_token", err=True)
        return 1

    def _whoami(self):
        """The bot's @username (to tell `/status@us` from `/status@another_bot`); a 401 ends the run."""
        self.stop.polling = True  # a slow answer must not hold up a SIGTERM either
        try:
            return self.api.get_me().get("username")
        except BotApiError as e:
            if e.kind == "unauthorized":
                raise
            return None
        finally:
            self.stop.polling = False

    def _confirm(self):
        """With --once, tell Telegram the last batch is done (a later run would confirm it anyway)."""
        try:
            self.api.get_updates(self.book.offset, 0, 10.0)
        except BotApiError:
            pass

    @staticmethod
    def _wait_for(error, backoff):
        if error.kind == "rate_limited":
            return error.retry_after if error.retry_after is not None else backoff
        if error.kind == "conflict":
            return max(CONFLICT_WAIT_S, backoff)
        return backoff

    def summary(self):
        taken = sum(self.taken.values())
        parts = [f"{n} {k}" for k, n in sorted(self.taken.items())]
        text = f"{taken} taken" + (f" ({', '.join(parts)})" if parts else "")
        ignored = sum(self.ignored.values())
        order = [k for k in IGNORED if k in self.ignored] + sorted(set(self.ignored) - set(IGNORED))
        text += f", {ignored} ignored" + (f" ({', '.join(f'{self.ignored[k]} {k}' for k in order)})"
                                          if ignored else "")
        return text

    # -- one update ---------------------------------------------------------------------------------------

    def handle(self, update):
        uid = update["update_id"]
        kind, obj = classify(update, self.tg)
        if kind == "ignored":
            self.ignored[obj] += 1
            return
        if uid in self.book.done:
            self.ignored["already done"] += 1
            return
        if kind == "callback":
            self.press(uid, obj)
            return
        cmd = parse(obj["text"], self.bot_username)
        if cmd is None:
            self.steer(uid, obj)
        elif cmd.name == "other_bot":
            self.ignored["for another bot"] += 1
        else:
            self.command(uid, obj, cmd)

    def reply(self, msg, text):
        if text:
            self._client().send(text, thread=topic_of(msg))

    def steer(self, uid, msg):
        started = self.book.started_for(uid)
        if started and started.get("entry") and entry_landed(self.cfg.paths, started["entry"], started["at"]):
            pass  # appended before a kill; only the mark was missing
        else:
            question = replied_to_id(msg) in asked_ids(self.cfg.paths)
            # A secret pasted into the chat is scrubbed like any other outside text (§17).
            entry = self.redactor.text(entry_text(self.tg, msg, sender_name(msg.get("from")), topic_of(msg),
                                                  question))
            self.book.start(uid, entry)
            append_entry(self.cfg.paths, entry)
        self.book.finish(uid)
        self.taken["steering"] += 1
        self.reply(msg, ACK)

    def _time_for_approval(self):
        """An approval runs the action under the tick lock; start one only if it can end before `until`."""
        t = self.cfg.tick
        need = max(t.shell_timeout_s, t.http_timeout_s) + APPROVAL_SLACK_S
        if self._left(self.until) < need:
            raise Deferred()

    def command(self, uid, msg, cmd):
        if cmd.name == "approve" and not cmd.error:
            self._time_for_approval()
        self.book.start(uid)
        if cmd.name in DECISION and not cmd.error:
            outcome = self.commands.decide(cmd.qid, DECISION[cmd.name], msg["from"]["id"], note=cmd.note)
            answer = outcome.message
            # The decision is posted to the approvals thread anyway: asked there, that post is the answer.
            if outcome.ok and topic_of(msg) == (self.tg.first_thread("approvals", "requests", "log") or 0):
                answer = None
        else:
            answer = self.commands.run(cmd, msg["from"]["id"])
            self.switched = self.switched or cmd.name in ("pause", "resume")
        self.book.finish(uid)
        self.taken[cmd.name if not cmd.error else "bad command"] += 1
        self.reply(msg, answer)

    def press(self, uid, query):
        query_id = query.get("id")
        post = query.get("message") if isinstance(query.get("message"), dict) else None
        chat = post.get("chat") if post and isinstance(post.get("chat"), dict) else {}
        if not allowed(query.get("from"), self.tg):
            self.ignored["other user"] += 1
            self.api.answer_callback(query_id, "Only the operator can decide this.", alert=True)
            return
        button = parse_button(query.get("data"))
        if button is None or not post or not same_chat(chat.get("id"), self.tg.chat_id):
            self.ignored["bad button"] += 1
            self.api.answer_callback(query_id, "This button is not one of mine.")
            return
        decision, qid, sha8 = button
        if decision == "approved":
            self._time_for_approval()
        self.book.start(uid)
        outcome = self.commands.decide(qid, decision, query["from"]["id"], sha8=sha8)
        self.book.finish(uid)
        self.taken["button"] += 1
        self.api.answer_callback(query_id, str(outcome.message)[:200], alert=not outcome.ok)
        if outcome.ok and isinstance(post.get("message_id"), int) and isinstance(post.get("text"), str):
            who = sender_name(query.get("from"))
            stamp = time.strftime("%H:%M UTC", time.gmtime(self.clock()))
            self.api.edit_text(chat["id"], post["message_id"],
                               f"{post['text']}\n\n{DECIDED_MARK[decision]} by {who} · {stamp}")


def install_stop():
    """A Stop that SIGTERM and SIGINT trip (call from the main thread)."""
    stop = Stop()
    stop.install()
    return stop
