"""The supervisor's timetable (§4): what runs next, when, and what is remembered across restarts.

`Scheduler.step(now)` makes one decision and runs at most one job through an injected runner, so the
rules can be driven by a fake clock in tests and by the wall clock in `supervisor.py`:

- The first tick runs at start-up; the next one starts `tick_interval_s` after the previous one *ended*.
- A due tick goes before anything else, then the digest, then the scribe, then the daily payload cleanup.
- The scribe's next run time, the local date of the last digest, the date of the last cleanup and the
  failure counts live in `state/.mako/schedule.json`, so a restart neither starves the scribe, nor pushes
  it back a whole interval, nor sends a second digest the same day.
- The digest runs once per local date, at the first pass at or after `digest_hour_local`. digest.py records
  the date itself on delivery (`state/.mako/digest_sent`), so one sent by hand, or killed after Telegram
  took it, is not sent again that day.
- A role that failed twice or more in a row waits longer (`interval * 2**min(k-1, 4)`, at most an hour
  more than usual) and says so; a success resets it. Exit 75 (the tick lock is busy) is not a failure.
- `logging.keep_days` of 0 keeps payloads forever; otherwise once a day older ones are deleted.
"""

import json
import os
import re
import time
import traceback
from pathlib import Path

from .children import STOPPED
from .errors import EXIT_BUSY
from .fileio import atomic_write, open_regular
from .pause import paused_reason
from .text import one_line

SCHEDULE_FILE = "schedule.json"
# Written by digest.py itself the moment Telegram accepted a digest (§4), read by the supervisor: a digest
# killed after delivery, or sent by hand, is never sent again the same local date.
DIGEST_SENT_FILE = "digest_sent"
ROLES = ("tick", "scribe", "digest", "listen")
SCHEDULE_MAX_BYTES = 64 * 1024
BACKOFF_MAX_EXTRA_S = 3600
BACKOFF_MAX_DOUBLINGS = 4
DIGEST_RETRY_S = 600
ERROR = "ERROR"
PAYLOAD_FOLDERS = ("ticks", "scribe")
DATE_RE = re.compile(r"\d{4}-\d{2}-\d{2}")
# listen.py fills the idle gaps (§20): gaps of at least MIN_GAP, ending END_EARLY before the next job is due
# (so the job starts on time), in PIECEs when no end is in sight (while paused); RETRY after a failure.
LISTEN_MIN_GAP_S, LISTEN_END_EARLY_S, LISTEN_KILL_AFTER_S, LISTEN_RETRY_S, LISTEN_PIECE_S = 5.0, 1.0, 5.0, 60.0, 60.0
# While paused, how often the loop looks for state/PAUSED to be gone.
PAUSE_POLL_S = 2.0


def backoff_gap(interval, failures):
    """The wait after `failures` failed runs in a row: one failure waits as usual, more wait longer."""
    if failures < 2:
        return interval
    extra = interval * (2 ** min(failures - 1, BACKOFF_MAX_DOUBLINGS) - 1)
    return interval + min(extra, BACKOFF_MAX_EXTRA_S)


def local_date(tm):
    return f"{tm.tm_year:04d}-{tm.tm_mon:02d}-{tm.tm_mday:02d}"


def record_digest_sent(private, tm):
    """Record the local date of `tm` as the day a digest was delivered."""
    atomic_write(Path(private) / DIGEST_SENT_FILE, local_date(tm) + "\n")


def digest_sent_date(private):
    """The local date digest.py last recorded a delivery on, or None."""
    try:
        with open(Path(private) / DIGEST_SENT_FILE, "rb") as f:
            text = f.read(64).decode("ascii", "replace").strip()
    except OSError:
        return None
    return text if DATE_RE.fullmatch(text) else None


def seconds_until_hour(tm, hour):
    """Seconds from the local time `tm` to the next local `hour`:00 (tomorrow's when it is already past).

    Ignores a DST change in between: a wake-up an hour early or late only means one more or one later pass,
    and ticks keep passing anyway.
    """
    into_day = tm.tm_hour * 3600 + tm.tm_min * 60 + tm.tm_sec
    target = hour * 3600
    return target - into_day if target > into_day else 86400 - into_day + target


def cleanup_payloads(logs_dir, keep_days, now):
    """Delete payload files (`logs/ticks/*.json`, `logs/scribe/*.json`) last modified over keep_days ago."""
    if keep_days <= 0:
        return 0
    cutoff = now - keep_days * 86400
    deleted = 0
    for name in PAYLOAD_FOLDERS:
        try:
            entries = list(os.scandir(os.path.join(logs_dir, name)))
        except OSError:
            continue
        for entry in entries:
            try:
                if (entry.name.endswith(".json") and entry.is_file(follow_symlinks=False)
                        and entry.stat(follow_symlinks=False).st_mtime < cutoff):
                    os.unlink(entry.path)
                    deleted += 1
            except OSError:
                continue
    return deleted


def timezone_name(now=None):
    """The local zone for the start-up line: its name when known (TZ or /etc/localtime), abbreviation, offset."""
    tm = time.localtime(now)
    offset = tm.tm_gmtoff
    sign = "-" if offset < 0 else "+"
    hours, minutes = divmod(abs(offset) // 60, 60)
    utc = f"UTC{sign}{hours:02d}:{minutes:02d}"
    name = os.environ.get("TZ", "").lstrip(":")
    if not name:
        link = os.path.realpath("/etc/localtime")
        if "zoneinfo/" in link:
            name = link.split("zoneinfo/", 1)[1]
    if name and name != tm.tm_zone:
        return f"{name} ({tm.tm_zone}, {utc})"
    return f"{tm.tm_zone} ({utc})"


class ScheduleState:
    """What survives a restart, stored as JSON in state/.mako/schedule.json."""

    def __init__(self, path):
        self.path = path
        self.scribe_next = None
        self.tick_next = None  # shown by status.py; a restart still ticks at once (§4)
        self.last_digest_date = None
        self.last_cleanup_date = None
        self.failures = {role: 0 for role in ROLES}

    def as_dict(self):
        return {"scribe_next": self.scribe_next, "tick_next": self.tick_next,
                "last_digest_date": self.last_digest_date, "last_cleanup_date": self.last_cleanup_date,
                "failures": dict(self.failures)}

    def load(self):
        """Read the file; a missing, unreadable or malformed one (or field) falls back to a fresh start."""
        try:
            with open_regular(self.path) as f:
                data = json.loads(f.read(SCHEDULE_MAX_BYTES).decode("utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as e:
            return f"{self.path}: unreadable ({e.__class__.__name__}), starting a fresh schedule"
        if not isinstance(data, dict):
            return f"{self.path}: not a JSON object, starting a fresh schedule"
        nxt = data.get("scribe_next")
        if isinstance(nxt, (int, float)) and not isinstance(nxt, bool):
            self.scribe_next = float(nxt)
        for key in ("last_digest_date", "last_cleanup_date"):
            if isinstance(data.get(key), str):
                setattr(self, key, data[key])
        failures = data.get("failures")
        if isinstance(failures, dict):
            for role in ROLES:
                n = failures.get(role)
                if isinstance(n, int) and not isinstance(n, bool) and n >= 0:
                    self.failures[role] = n
        return None

    def save(self):
        atomic_write(self.path, json.dumps(self.as_dict(), indent=1, sort_keys=True) + "\n")


class Scheduler:
    """Decides and runs the next job; `step(now)` returns the epoch time at which something is next due.

    runner(label, argv, timeout_s) -> exit code, TIMEOUT or STOPPED; clock() -> epoch seconds (read after a
    run to measure it); localtime(epoch) -> struct_time (the digest hour and dates); say(text) prints a line.
    """

    def __init__(self, cfg, runner, scripts_dir, python, clock=time.time, localtime=time.localtime,
                 say=print):
        self.cfg = cfg
        self.runner = runner
        self.scripts_dir = str(scripts_dir)
        self.python = python
        self.clock = clock
        self.localtime = localtime
        self.say = say
        sup = cfg.supervisor
        self.tick_interval = sup.tick_interval_s
        self.scribe_interval = sup.scribe_interval_s
        self.digest_hour = sup.digest_hour_local
        self.scribe_on = cfg.scribe.enabled
        self.digest_on = cfg.digest.enabled
        self.flag = cfg.paths.state / "compact_pending.flag"
        self.state = ScheduleState(cfg.paths.private / SCHEDULE_FILE)
        self.started = False
        self.tick_next = None
        self.digest_retry_at = 0.0
        self.listen_on = cfg.telegram.inbound_on
        self.listen_retry_at = 0.0
        self.paused = None

    # -- bookkeeping --------------------------------------------------------------------------------------

    def _start(self, now):
        self.started = True
        problem = self.state.load()
        if problem:
            self.say(problem)
        self.tick_next = now
        if self.state.scribe_next is None:
            self.state.scribe_next = now
        for role, n in self.state.failures.items():
            if n:
                self.say(f"{role}: {n} failed run(s) in a row before this start")

    def _save(self):
        try:
            self.state.save()
        except OSError as e:
            self.say(f"could not save {self.state.path}: {e.__class__.__name__}: {e.strerror or e}")

    def _argv(self, script, *extra):
        return [self.python, os.path.join(self.scripts_dir, script), "--config", str(self.cfg.path), *extra]

    # -- decisions ----------------------------------------------------------------------------------------

    def _last_digest(self):
        """The later of the date this supervisor recorded and the one digest.py recorded on delivery."""
        dates = [d for d in (self.state.last_digest_date, digest_sent_date(self.cfg.paths.private)) if d]
        return max(dates) if dates else None

    def _digest_due(self, now, tm):
        if not self.digest_on or now < self.digest_retry_at or tm.tm_hour < self.digest_hour:
            return False
        last = self._last_digest()
        return last is None or local_date(tm) > last

    def _cleanup_due(self, tm):
        last = self.state.last_cleanup_date
        return last is None or local_date(tm) > last

    def _clamp(self, now):
        """Pull in due times further ahead than any interval plus back-off allows.

        They only get there when the wall clock went back (or a persisted time came from a longer interval);
        without this a clock step of an hour would silence the tick for an hour.
        """
        if self.tick_next > now + self.tick_interval + BACKOFF_MAX_EXTRA_S:
            self.tick_next = now
        if self.state.scribe_next > now + self.scribe_interval + BACKOFF_MAX_EXTRA_S:
            self.state.scribe_next = now
        if self.digest_retry_at > now + DIGEST_RETRY_S + BACKOFF_MAX_EXTRA_S:
            self.digest_retry_at = now

    def _check_pause(self):
        """Look at state/PAUSED; say so once when a pause starts and once when it ends."""
        reason = paused_reason(self.cfg.paths)
        if reason and not self.paused:
            self.say(f"paused: {one_line(reason, 300, 'state/PAUSED')}")
        elif not reason and self.paused:
            self.say("resumed")
        self.paused = reason
        return reason

    def due(self, now):
        """The job to run now, in priority order, or None. While paused no tick or scribe run is due."""
        if not self.started:
            self._start(now)
        self._clamp(now)
        tm = self.localtime(now)
        paused = self._check_pause()
        if now >= self.tick_next and not paused:
            return "tick"
        if self._digest_due(now, tm):
            return "digest"
        if self.scribe_on and not paused and now >= self.state.scribe_next:
            return "scribe"
        if self._cleanup_due(tm):
            return "cleanup"
        return None

    def next_due(self, now, pause_poll_s=PAUSE_POLL_S):
        """Epoch time at which the next job becomes due (may be <= now when one is due already).

        While paused, the loop looks again after `pause_poll_s` (the listener, which may be told `resume`
        itself, asks for a longer piece)."""
        if not self.started:
            self._start(now)
        tm = self.localtime(now)
        if self.paused:
            times = [now + pause_poll_s]
        else:
            times = [self.tick_next] + ([self.state.scribe_next] if self.scribe_on else [])
        if self.digest_on:
            if self._digest_due(now, tm):
                times.append(now)
            elif now < self.digest_retry_at:
                times.append(self.digest_retry_at)
            else:
                times.append(now + seconds_until_hour(tm, self.digest_hour))
        times.append(now if self._cleanup_due(tm) else now + seconds_until_hour(tm, 0))
        return min(times)

    # -- running ------------------------------------------------------------------------------------------

    def step(self, now):
        """Run the job due at `now`, if any; return when the next one is due."""
        job = self.due(now)
        if job == "tick":
            self._tick(now)
        elif job == "digest":
            self._digest(now)
        elif job == "scribe":
            self._scribe(now)
        elif job == "cleanup":
            self._cleanup(now)
        elif self._listen_until(now) is not None:
            self._listen(now, self._listen_until(now))
        else:
            return self.wake_at(now)
        return self.wake_at(self.clock())

    def _listen_until(self, now):
        """When a listen.py started now should end, or None when none should start now."""
        if not self.listen_on or now < self.listen_retry_at:
            return None
        nxt = self.next_due(now, pause_poll_s=LISTEN_PIECE_S)
        until = (nxt if nxt > now else now + LISTEN_PIECE_S) - LISTEN_END_EARLY_S
        return until if until - now >= LISTEN_MIN_GAP_S else None

    def wake_at(self, now):
        """When the loop should step again: the next due job, or now when listen.py should fill the gap."""
        nxt = self.next_due(now)
        if self.listen_on:
            if self._listen_until(now) is not None:
                return now
            if self.listen_retry_at > now:
                nxt = min(nxt, self.listen_retry_at)
        return nxt

    def _run(self, label, argv, timeout):
        """Run one child through the runner, printing its start and end; never raises."""
        self.say(f"{label}: start ...")
        began = self.clock()
        try:
            rc = self.runner(label, argv, timeout)
        except Exception as e:  # a child that cannot even start must not take the supervisor down
            self.say(f"{label}: could not run: {e.__class__.__name__}: {e}")
            rc = ERROR
        self.say(f"{label}: done rc={rc} in {self.clock() - began:.1f}s")
        return rc

    def _account(self, role, rc, interval):
        """Update the failure count for a finished run; return the gap before the role's next run."""
        failures = self.state.failures
        if rc == 0:
            if failures[role]:
                self.say(f"{role}: recovered after {failures[role]} failed run(s)")
            failures[role] = 0
        elif rc != EXIT_BUSY:
            failures[role] += 1
        gap = backoff_gap(interval, failures[role])
        if gap > interval:
            self.say(f"{role}: {failures[role]} failed runs in a row, backing off: next in {gap:.0f}s "
                     f"instead of {interval:g}s")
        return gap

    def _tick(self, now):
        compact = self.flag.exists()
        label = "tick(compact)" if compact else "tick(normal)"
        # No --mode: the tick decides itself from the flag, and falls back to normal after failed compactions.
        rc = self._run(label, self._argv("tick.py"), self.cfg.supervisor.tick_timeout_s)
        end = self.clock()
        if rc == STOPPED:
            return
        self.tick_next = self.state.tick_next = end + self._account("tick", rc, self.tick_interval)
        self._save()

    def _scribe(self, now):
        rc = self._run("scribe", self._argv("scribe.py"), self.cfg.supervisor.scribe_timeout_s)
        end = self.clock()
        if rc == STOPPED:
            return
        self.state.scribe_next = end + self._account("scribe", rc, self.scribe_interval)
        self._save()

    def _digest(self, now):
        rc = self._run("digest", self._argv("digest.py"), self.cfg.supervisor.digest_timeout_s)
        end = self.clock()
        today = local_date(self.localtime(now))
        # Delivered is delivered, whatever became of the run after that (a kill, a timeout).
        delivered = (digest_sent_date(self.cfg.paths.private) or "") >= today
        if rc == STOPPED and not delivered:
            return
        gap = self._account("digest", 0 if delivered else rc, DIGEST_RETRY_S)
        if rc == 0 or delivered:
            self.state.last_digest_date = today
        else:
            self.digest_retry_at = end + gap
        self._save()

    def _listen(self, now, until):
        """listen.py until just before the next job is due; killed shortly after that if it overstays."""
        argv = self._argv("listen.py", "--until", f"{until:.0f}")
        rc = self._run("listen", argv, until - now + LISTEN_KILL_AFTER_S)
        if rc == STOPPED:
            return
        self._check_pause()  # a `resume` from the chat ends the run early: the held-back tick goes now
        # No spinning on a listener that exits at once; a failing one (a bad token) waits longer.
        self.listen_retry_at = now + LISTEN_MIN_GAP_S
        gap = self._account("listen", rc, LISTEN_RETRY_S)
        if rc != 0:
            self.listen_retry_at = self.clock() + gap

    def _cleanup(self, now):
        keep = self.cfg.logging.keep_days
        try:
            n = cleanup_payloads(self.cfg.paths.logs, keep, now)
            if keep > 0:
                self.say(f"cleanup: deleted {n} payload file(s) older than {keep:g} days")
        except Exception:
            self.say("cleanup failed:\n" + traceback.format_exc().rstrip())
        self.state.last_cleanup_date = local_date(self.localtime(now))
        self._save()


def run_forever(scheduler, stop, clock=time.time, max_sleep_s=60.0, error_pause_s=10.0, say=print):
    """Step the scheduler and sleep until the next due time, until `stop` is requested.

    Sleeps are capped at `max_sleep_s` so a wall-clock jump is noticed within a minute; an unexpected error
    is printed and the loop carries on after a pause.
    """
    while not stop.requested:
        try:
            next_at = scheduler.step(clock())
        except Exception:
            say("unexpected error in the loop (continuing):\n" + traceback.format_exc().rstrip())
            stop.sleep(error_pause_s)
            continue
        delay = next_at - clock()
        if delay > 0:
            stop.sleep(min(delay, max_sleep_s))
