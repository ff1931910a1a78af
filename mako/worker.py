"""One worker tick as a transaction (§5): claim, assemble, call, validate, apply, act, record.

Nothing is written and no action runs until the whole reply has passed validation. Whatever happens
after the tick number is taken, the tick records itself: a metrics row, a payload file and (on failure)
error-N.log plus a FAIL post; a failed tick keeps the INBOX for the next one.
"""

import json
import logging
import os
import signal
import sys
import time
from pathlib import Path

from . import counter, decisions, inbox as inbox_mod, report
from .actions import ActionContext, identity, run_action
from .approvals import ApprovalQueue
from .errors import EXIT_BUSY, EXIT_FAIL, EXIT_OK, AllProvidersFailed, PathRefused, ResponseError, Terminated
from .fileio import FileLock, append, atomic_write, displace, numbered_names
from .health import safe_record_tick
from .llm import call_providers
from .logs import append_metrics, iso
from .paths import (PathPolicy, check_layout, check_size, copy_file, ensure_layout, remove_stale_temp_files,
                    sweep_due)
from .request import COMPACT_FAIL_LIMIT, assemble, choose_mode, read_int
from .response import parse_reply
from .runrecord import RunRecord, outcome_of

log = logging.getLogger(__name__)

MAX_FILES = 200
# What a tick stopped by SIGTERM may still spend on its FAIL post (the supervisor kills it 5 s later).
TERMINATED_POST_S = 3.0


class Tick(RunRecord):
    def __init__(self, cfg, mode=None, clock=time.time):
        super().__init__(cfg, None, cfg.supervisor.tick_timeout_s, clock)
        self.requested_mode = mode
        self.mode = "normal"
        self.mode_note = None
        self.inbox = inbox_mod.Inbox()
        self.llm = None
        self.reply = None
        self.writes = []
        self.actions = []
        self.set_compact_flag = False
        self.recording = False
        self.moved_unposted = []
        self.in_action = None
        self.journal_archived = None

    def _on_sigterm(self, signum, frame):
        # Stop the work, but never the recording of it: the supervisor's grace period covers that.
        if not self.recording:
            self.recording = True
            raise Terminated("stopped by SIGTERM")

    # -- the transaction ------------------------------------------------------------------------------

    def run(self):
        cfg = self.cfg
        try:
            self.note_moved(ensure_layout(cfg), logged=True)
            lock = FileLock(cfg.paths.private / "tick.lock")
            acquired = lock.acquire()
        except Exception as e:  # noqa: BLE001 — before the lock, still a row, a post and rc 1
            return self.fail_early(e, "preparing the layout")
        if not acquired:
            print("tick: another tick (or an approval running its action) holds state/.mako/tick.lock; "
                  "not starting", file=sys.stderr)
            return EXIT_BUSY
        old_handler = signal.signal(signal.SIGTERM, self._on_sigterm)
        try:
            try:
                if sweep_due(cfg):
                    remove_stale_temp_files(cfg)  # litter from a writer killed mid-write, under the lock
                self.n = counter.next_tick(cfg.paths)
            except Exception as e:  # noqa: BLE001
                return self.fail_early(e, "taking the tick number")
            self.payload["tick_n"] = self.n
            self.post_moved()
            try:
                self.transaction()
                outcome, rc = "ok", EXIT_OK
            except BaseException as e:  # noqa: BLE001 — every failure is recorded, then reported by rc
                self.recording = True
                outcome, rc = self.fail(e), EXIT_FAIL
                if isinstance(e, KeyboardInterrupt):
                    rc = 130
            self.recording = True
            self.finish(outcome)
            return rc
        finally:
            signal.signal(signal.SIGTERM, old_handler)
            lock.release()

    def fail_early(self, error, step):
        """A failure before the tick could number or record itself: a stderr line, a FAIL post, a metrics
        row where the logs folder allows one, and rc 1 — never a silent stop."""
        cfg = self.cfg
        text = self.redactor.text(f"{type(error).__name__}: {error}")
        self.telegram.send(report.failure_summary(self.n if self.n is not None else "?",
                                                  RuntimeError(f"while {step}: {text}")), "log")
        row = {"ts": iso(), "tick_n": self.n, "mode": self.requested_mode or "normal",
               "wall_s": round(self.clock() - self.started, 3), "outcome": "fail"}
        line = f"tick: failed before it could record itself ({step}): {text}"
        try:
            append_metrics(cfg.paths.logs / "metrics.csv", row)
        except Exception as e:  # noqa: BLE001 — the stderr line is then the only record
            line += f"; no metrics row either ({type(e).__name__})"
        # One line: journald shows it as one event, whatever went wrong.
        print(line, file=sys.stderr, flush=True)
        return EXIT_FAIL

    def note_moved(self, moved, logged=False):
        """Record what the layout check moved aside (a folder, FIFO or link where a wrapper path was)."""
        for line in moved:
            if not logged:
                log.warning("%s", line)
            self.errors.append(line)
            self.moved_unposted.append(line)
        if self.n is not None:
            self.post_moved()

    def post_moved(self):
        if self.moved_unposted:
            self.telegram.send(f"🦫 #{self.n} ⚠️ " + "\n".join(self.moved_unposted), "log")
            self.moved_unposted = []

    def repair_layout(self):
        """Check the wrapper's paths again before writing the records: an action may have planted something."""
        try:
            moved = check_layout(self.cfg)
            self.note_moved(moved)
            visible = self.cfg.paths.state / "tick_counter.txt"
            if moved and self.n is not None and not os.path.lexists(visible):
                atomic_write(visible, f"{self.n}\n", mode=0o644)  # the operator's view of the counter
        except OSError as e:
            self.errors.append(self.redactor.text(f"layout check failed: {e}"))

    def transaction(self):
        cfg = self.cfg
        self.inbox = inbox_mod.claim(cfg.paths, self.n)
        self.mode, self.mode_note = choose_mode(cfg, self.requested_mode)
        if self.mode_note:
            # Stop retrying a compaction that keeps failing; a later trigger sets the flag afresh.
            self.errors.append(self.mode_note)
            (cfg.paths.state / "compact_pending.flag").unlink(missing_ok=True)
            atomic_write(cfg.paths.private / "compact_failures", "0\n")
            self.telegram.send(f"🦫 #{self.n} ⚠️ {self.mode_note}", "log")
        self.payload["mode"] = self.mode
        self.payload["inbox_present"] = self.inbox.present
        approvals_text, self.approvals_seen = decisions.context_block(cfg)
        system_prompt, message, sizes, self.notes_skipped = assemble(
            cfg, self.mode, self.inbox.text if self.inbox.present else None, approvals_text=approvals_text)
        self.payload.update(system_prompt=system_prompt, user_message=message, sizes=sizes)
        # An INBOX longer than the context shows is archived only as far as it was shown.
        self.payload["inbox_held_back_bytes"] = self.inbox.keep_shown(message)
        # A compaction tick is the remedy for an over-cap context (its journal fills the cap by design).
        if sizes["over_cap"] and self.mode != "compact":
            self.set_compact_flag = True
            atomic_write(cfg.paths.state / "compact_pending.flag", "context over the input cap\n", mode=0o644)
        log.info("tick %d (%s): %d tokens in", self.n, self.mode, sizes["total"])

        llm_deadline = self.deadline - min(60.0, (self.deadline - self.clock()) * 0.3)
        try:
            self.llm = call_providers(cfg, system_prompt, message, llm_deadline, self.redactor)
        except AllProvidersFailed as e:
            self.payload["llm_attempts"] = getattr(e, "attempts", [])
            raise
        self.payload["llm_attempts"] = self.llm.attempts
        self.payload["raw_content"] = self.llm.content

        reply = parse_reply(self.llm.content, max_requested_notes=cfg.context.max_requested_notes,
                            inbox_present=self.inbox.present)
        # Whatever the model writes anywhere is scrubbed first: no secret reaches a file it can name.
        self.reply = self.redactor.obj(reply)
        self.payload["parsed_response"] = self.reply

        # Validated: from here on, side effects.
        self.apply_files()
        self.run_actions()
        self.repair_layout()
        self.write_results()
        self.write_wrapper_file(cfg.paths.state / "JOURNAL.md", report.journal_line(self.n, iso(), self.reply["work_done"]),
                       append_only=True)
        self.write_wrapper_file(cfg.paths.state / "next_notes.json",
                       json.dumps(self.reply["request_notes"], ensure_ascii=False) + "\n")
        self.update_compaction()
        if self.mode == "normal":  # shown to a tick that could act on them: not shown again
            decisions.mark_seen(cfg, self.approvals_seen)
        self.payload["inbox_archived"] = inbox_mod.archive(cfg.paths, self.inbox)

    # -- steps ----------------------------------------------------------------------------------------

    def apply_files(self):
        cfg, reply = self.cfg, self.reply
        policy = PathPolicy(cfg, compaction=self.mode == "compact")
        state = cfg.paths.state
        for key, name in (("state_md", "STATE.md"), ("next_md", "NEXT.md")):
            if reply[key] is not None:
                self.write_wrapper_file(state / name, reply[key])
                self.writes.append({"type": "write", "path": f"state/{name}", "ok": True, "status": "ok",
                                    "bytes": len(reply[key].encode("utf-8", "backslashreplace"))})
        persona = reply["persona_update"]
        if persona and persona["mode"] != "skip":
            if persona["mode"] == "append":
                text = persona["content"] if persona["content"].endswith("\n") else persona["content"] + "\n"
                self.write_wrapper_file(state / "PERSONA.md", text, append_only=True)
            else:
                self.write_wrapper_file(state / "PERSONA.md", persona["content"])
            self.writes.append({"type": persona["mode"], "path": "state/PERSONA.md", "ok": True,
                                "status": "ok", "bytes": len(persona["content"].encode("utf-8", "backslashreplace"))})
        for i, entry in enumerate(reply["files"]):
            if i >= MAX_FILES:
                why = f"over {MAX_FILES} files in one reply; not written"
            elif self.clock() > self.deadline - 5:
                why = "no time left in this tick; not written"
            else:
                self.writes.append(self.write_model_file(policy, entry["path"], entry["content"], entry["mode"]))
                continue
            self.writes.append({"type": entry["mode"], "path": str(entry["path"])[:300], "ok": False,
                                "status": "skipped", "summary": f"{str(entry['path'])[:200]}: {why}"})
        self.payload["files_written"] = self.writes

    def write_wrapper_file(self, path, text, append_only=False, durable=True):
        """Write one of the wrapper's own state files, first moving aside a symlink or folder planted there."""
        aside = displace(path)
        if aside:
            self.note_moved([f"{path.name} was not a regular file; moved aside to {aside.name}"])
        if append_only:
            append(path, text)
        else:
            atomic_write(path, text, mode=0o644, durable=durable)

    def write_model_file(self, policy, path, content, mode):
        result = {"type": mode, "path": str(path)[:300], "mode": mode}
        try:
            check_size(content)  # before a compaction archives the journal it would replace
            # policy.write checks the path itself; a compaction looks first, to archive the journal it replaces.
            if self.mode == "compact" and policy.check_write(path) == Path(
                    os.path.realpath(self.cfg.paths.state / "JOURNAL.md")):
                # Once per tick: the first write saw the whole journal; later ones replace a rewrite.
                if self.journal_archived is None:
                    self.journal_archived = self.archive_journal() or ""
                result["journal_archived_to"] = self.journal_archived or None
            result["bytes"] = policy.write(path, content, mode)
            result.update(ok=True, status="ok")
        except PathRefused as e:
            result.update(ok=False, status="refused", error=self.redactor.text(str(e)))
        except OSError as e:
            result.update(ok=False, status="error", error=self.redactor.text(f"{e.__class__.__name__}: {e}"))
        return result

    def archive_journal(self):
        """Copy the whole journal to archive/ before a compaction rewrites it: no line is ever lost."""
        src = self.cfg.paths.state / "JOURNAL.md"
        if not src.exists():
            return None
        stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime(self.clock()))
        dst = next(p for p in numbered_names(self.cfg.paths.archive, f"journal-{stamp}") if not p.exists())
        copy_file(src, dst)
        return str(dst.relative_to(self.cfg.paths.root)) if self.cfg.paths.root in dst.parents else str(dst)

    def run_actions(self):
        cfg, actions = self.cfg, self.reply["actions"]
        if self.mode == "compact":
            self.actions = [self.skipped(a, "a compaction tick runs no actions") for a in actions]
            self.payload["actions"] = self.actions
            return
        queue = ApprovalQueue(cfg, self.redactor, self.telegram)
        ctx = ActionContext(cfg=cfg, policy=PathPolicy(cfg), redactor=self.redactor, telegram=self.telegram,
                            queue=queue, tick_n=self.n, deadline=self.deadline)
        limit = cfg.tick.max_actions
        for i, action in enumerate(actions):
            if i >= limit:
                result = self.skipped(action, f"over tick.max_actions ({limit}); not run")
            elif self.clock() > self.deadline - 2:
                result = self.skipped(action, "no time left in this tick; not run")
            else:
                if i:
                    self.repair_layout()  # the action before may have planted a link the queue would follow
                # If the tick dies inside this action, the next tick must learn that it may have run.
                self.in_action = (action, f"stopped while running action {i + 1} of {len(actions)} "
                                          f"({str(action.get('type'))[:40]}); it may have run")
                self.write_results(failure=self.in_action[1])
                result = run_action(ctx, action)
                self.in_action = None
            self.actions.append(result)
            self.payload["actions"] = self.actions

    def skipped(self, action, why):
        kind = action.get("type") if isinstance(action, dict) else None
        return {"type": str(kind)[:40], "ok": False, "status": "skipped", "summary": f"{kind}: {why}"}

    def write_results(self, failure=None):
        llm = self.llm
        text = report.last_results(self.n, self.mode, iso(), llm.slot if llm else None, llm.model if llm else None,
                                   self.writes, self.actions, getattr(self, "notes_skipped", ()), failure)
        self.write_wrapper_file(self.cfg.paths.state / "LAST_RESULTS.md", self.redactor.text(text), durable=False)

    def update_compaction(self):
        cfg, flag = self.cfg, self.cfg.paths.state / "compact_pending.flag"
        every = cfg.tick.compact_every_n_ticks
        if self.mode == "compact":
            # The flag goes first: a reset give-up count before a failing unlink would retry for ever.
            if not self.set_compact_flag:
                flag.unlink(missing_ok=True)
            atomic_write(cfg.paths.private / "compact_failures", "0\n")
            return
        reasons = []
        if self.set_compact_flag:
            reasons.append("context over the input cap")
        if self.reply["compact_now"]:
            reasons.append("compact_now requested by the model")
        if every and self.n % every == 0:
            reasons.append(f"every {every} ticks")
        if reasons:
            atomic_write(flag, "; ".join(reasons) + "\n", mode=0o644)

    # -- recording ------------------------------------------------------------------------------------

    def fail(self, error):
        """Record a failed tick: error log, partial results, FAIL post. Returns the outcome word."""
        cfg = self.cfg
        outcome = outcome_of(error)
        message = f"{type(error).__name__}: {error}"
        if isinstance(error, ResponseError) and not str(error).startswith("PARSE_ERROR"):
            message = f"PARSE_ERROR: {error}"
        self.errors.append(self.redactor.text(message))
        if isinstance(error, Terminated):
            # Stopped at the supervisor's timeout: the deadline is past, but the grace period still
            # leaves time for the FAIL post.
            self.telegram.deadline = self.clock() + TERMINATED_POST_S
        if self.in_action is not None:
            action, note = self.in_action
            self.actions.append({"type": str(action.get("type"))[:40] if isinstance(action, dict) else "?",
                                 "ok": False, "status": "stopped", **identity(action), "summary": note,
                                 "error": type(error).__name__})
            self.payload["actions"] = self.actions
            message = f"{message} — {note}"
        self.repair_layout()
        self.log_failure(cfg.paths.logs, f"tick {self.n} ({self.mode})", error)
        try:
            if self.mode == "compact":
                fails = read_int(cfg.paths.private / "compact_failures") + 1
                atomic_write(cfg.paths.private / "compact_failures", f"{fails}\n")
                if fails >= COMPACT_FAIL_LIMIT:
                    self.errors.append(f"compaction failed {fails} ticks in a row; next ticks run normally")
            self.write_results(failure=message)
        except Exception as e:  # noqa: BLE001 — recording must not hide the original failure
            self.errors.append(self.redactor.text(f"while recording the failure: {e!r}"))
        text = report.failure_summary(self.n, error if not isinstance(error, ResponseError) else
                                      ResponseError(message))
        if self.in_action is not None:
            text += f"\n⚠️ {self.in_action[1]}"
        self.telegram.send(text, "log")
        log.error("tick %s failed: %s", self.n, self.redactor.text(message))
        return outcome

    def finish(self, outcome):
        self.repair_layout()
        cfg, llm, reply = self.cfg, self.llm, self.reply
        ended = self.clock()
        wall = ended - self.started
        if outcome == "ok":
            text = (reply["telegram"] or reply["work_done"]) if reply else ""
            summary = report.tick_summary(self.n, self.started, wall, llm.slot, llm.model, text,
                                          cfg.tick.telegram_summary_max_chars, self.actions, reply["drift_flag"])
            self.telegram.send(summary, "log")
        # Alerts on a failing primary or failing ticks; posted before the payload so it records them.
        safe_record_tick(cfg, self.n, outcome, self.payload["llm_attempts"], self.telegram, self.errors)
        row = report.metrics_row(iso(), self.n, self.mode, wall, outcome, llm, reply, self.actions, self.writes,
                                 self.payload["sizes"].get("total") if self.payload["sizes"] else None)
        row = {k: self.redactor.text(v) if isinstance(v, str) else v for k, v in row.items()}
        try:
            append_metrics(cfg.paths.logs / "metrics.csv", row)
        except OSError as e:
            self.errors.append(f"metrics row not written: {e}")
        self.save_payload(cfg.paths.logs / "ticks", outcome, mode=self.mode)
        log.info("tick %d %s in %.1fs", self.n, outcome, wall)
