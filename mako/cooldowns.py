"""Provider cool-downs (§9), kept in state/.mako/cooldowns.json so a later run honours a limit an earlier one
hit: a usage-limit 429 until the provider says, two timeouts in a row for `llm.timeout_cooldown_s`.

No HTTP here: `status.py` reads the same file through this class without importing the provider stack.
"""

import json
import logging
import time

from .fileio import atomic_write, read_text
from .logs import iso_at

log = logging.getLogger(__name__)

COOLDOWN_FILE = "cooldowns.json"
TIMEOUTS_FOR_COOLDOWN = 2


class Cooldowns:
    """Per-slot cool-down deadlines, persisted so a later run honours a limit an earlier one hit.

    An entry only applies while the slot still points at the same base_url: usage limits belong to the
    account behind the endpoint, and a config change to another endpoint deserves a fresh try.
    """

    def __init__(self, folder, clock=time.time):
        self.path = folder / COOLDOWN_FILE
        self.clock = clock

    def load(self):
        text = read_text(self.path, "")
        if not text.strip():
            return {}
        try:
            data = json.loads(text)
        except ValueError:
            log.warning("%s is not valid JSON; ignoring saved cool-downs", self.path)
            return {}
        return data if isinstance(data, dict) else {}

    def until(self, provider):
        """The time the provider's cool-down ends, or None when it is not cooling down."""
        entry = self.load().get(provider.name)
        if not isinstance(entry, dict) or entry.get("base_url") != provider.base_url:
            return None
        until = entry.get("until")
        if isinstance(until, (int, float)) and until > self.clock():
            return float(until)
        return None

    def set(self, provider, until, reason):
        data = self.load()
        data[provider.name] = {"until": until, "until_iso": iso_at(until), "base_url": provider.base_url,
                               "model": provider.model, "reason": reason[:300], "set_at": iso_at(self.clock())}
        self._save(data)

    def clear(self, provider):
        data = self.load()
        if provider.name in data:
            del data[provider.name]
            self._save(data)

    def _save(self, data):
        atomic_write(self.path, json.dumps(data, indent=2, sort_keys=True) + "\n")

    def end_timeout_row(self, provider):
        """Forget a row of timeouts (a cool-down already set stays)."""
        data = self.load()
        entry = data.get(provider.name)
        if isinstance(entry, dict) and "timeouts_in_row" in entry:
            del entry["timeouts_in_row"]
            if "until" not in entry:
                del data[provider.name]
            self._save(data)

    def timed_out(self, provider, cooldown_s):
        """Count a timeout; the second in a row puts the provider on cool-down. Returns its end, or None."""
        data = self.load()
        entry = data.get(provider.name)
        entry = dict(entry) if isinstance(entry, dict) and entry.get("base_url") == provider.base_url else {}
        row = entry.get("timeouts_in_row", 0)
        row = (row if isinstance(row, int) and not isinstance(row, bool) else 0) + 1
        if row >= TIMEOUTS_FOR_COOLDOWN:
            until = self.clock() + cooldown_s
            self.set(provider, until, f"{row} timeouts in a row")
            return until
        entry.update(timeouts_in_row=row, base_url=provider.base_url, model=provider.model)
        entry.setdefault("set_at", iso_at(self.clock()))
        data[provider.name] = entry
        self._save(data)
        return None
